"""Time a given list of width configurations into a campaign's database, by the campaign's protocol.

A campaign (`toolchain.latency.campaign`) times the configurations its sampler draws; the configurations an
allocator produces (`toolchain.latency.allocator_sampling`) depend on a predictor fitted on those first, so
they are timed afterwards, here: same database, same machine fingerprint and clock, same measurement
config, timed in chunks next to the dense model as a sentinel, and a chunk timed in a slow spell is timed
again (the lower timing kept). Rows carry the configuration's tag, so a fit can tell them apart.

Example:
    >>> campaign = CampaignConfig.for_target("zoo:resnet18", "runs/latency.db", Target("cpu"))
    >>> report = time_given_configs(campaign, allocator_configs(model, x, latency))   # doctest: +SKIP
    >>> report.measured                                                                 # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace

from toolchain.inputs import make_inputs, specs_from_key, specs_key, vocab_size_of
from toolchain.latency.campaign import MIN_JOBS_FOR_BUILD_WORKERS, CampaignConfig, CampaignReport, check_clock
from toolchain.latency.features import LayerSpec, total_macs
from toolchain.latency.fingerprint import fingerprint_id, machine_fingerprint
from toolchain.latency.measure import Measurement, latency_ms
from toolchain.latency.sampling import SampledConfig
from toolchain.latency.sentinel import SentinelCheck, time_chunk
from toolchain.latency.store import MeasurementRow, MeasurementStore, config_key
from toolchain.latency.variants import BuiltVariant, VariantBuilder
from toolchain.targets import get_target, resolve_clock
from toolchain.threads import torch_threads


def time_given_configs(config: CampaignConfig, configs: Sequence[SampledConfig],
                       on_progress: Callable[[int, int, str], None] | None = None) -> CampaignReport:
    """Time each configuration of `configs` not yet in `config.db_path` (kind 'model', replicate 0)."""
    from toolchain.graph import PruningGraph
    from toolchain.models import resolve_model

    target = get_target(config.target, config.backend, config.threads, rpc=config.rpc)
    config = replace(config, measure=replace(config.measure, clock=resolve_clock(config.measure.clock, target)))
    check_clock(config, target)
    with torch_threads(1):
        wanted = specs_from_key(config.input_shape) if config.input_shape else ()
        model, specs = resolve_model(config.model, inputs=wanted)
        model = model.eval()
        input_shape = specs_key(specs)
        example_input = make_inputs(specs, vocab_size_of(model))
        groups = PruningGraph(copy.deepcopy(model), example_input).groups
        fingerprint = {**machine_fingerprint(target), "clock": config.measure.clock}
        report = CampaignReport()
        with MeasurementStore(config.db_path) as store:
            store.save_groups(config.model, input_shape, [(g.name, g.dense_width, g.unit) for g in groups])
            done = store.existing_keys()
            pending = [c for c in configs if config_key("model", config.model, c.widths, input_shape, target.name,
                                                        target.backend, target.threads) not in done]
            report.planned, report.skipped = len(configs), len(configs) - len(pending)
            sentinel = target.prepare(model, example_input)

            def store_row(given: SampledConfig, built: BuiltVariant, result: Measurement) -> None:
                report.measured += int(store.insert(_row(config, target, input_shape, fingerprint, given, built,
                                                         result)))

            workers = config.build_workers if len(pending) >= MIN_JOBS_FOR_BUILD_WORKERS else 1
            with VariantBuilder(config.model, input_shape, model, example_input, target, workers) as builder:
                _time_chunks(pending, config, builder, sentinel, example_input, target, store_row, report,
                             on_progress)
    return report


def _time_chunks(pending, config: CampaignConfig, builder: VariantBuilder, sentinel, example_input, target,
                 store_row, report: CampaignReport, on_progress) -> None:
    """Chunks of `config.interleave` timed next to the sentinel; a chunk timed while the sentinel was more
    than `quiet_tolerance` slower than its best is timed again (up to `max_retimes`), the lower timing kept."""
    check, statistic = SentinelCheck(config.quiet_tolerance), config.measure.statistic
    step = max(1, config.interleave)
    for start in range(0, len(pending), step):
        if on_progress:
            on_progress(start, len(pending), pending[start].tag)
        chunk = pending[start:start + step]
        built = builder.build([("model", c.widths) for c in chunk])
        ok = [(c, b) for c, b in zip(chunk, built, strict=True) if not isinstance(b, Exception)]
        report.failed += [f"{c.tag} {c.widths}: {type(b).__name__}: {b}"
                          for c, b in zip(chunk, built, strict=True) if isinstance(b, Exception)]
        runners = [b.runner(target, example_input) for _, b in ok]
        best: list[Measurement | Exception | None] = [None] * len(ok)
        for _attempt in range(config.max_retimes + 1):
            results, sentinel_ms = time_chunk(sentinel, runners, config.measure)
            best = [_lower(r, b, statistic) for r, b in zip(results, best, strict=True)]
            if check.observe(sentinel_ms):
                break
        for (given, variant), result in zip(ok, best, strict=True):
            if isinstance(result, Measurement):
                store_row(given, variant, result)
            else:
                report.failed.append(f"{given.tag} {given.widths}: {type(result).__name__}: {result}")
    if on_progress:
        on_progress(len(pending), len(pending), "done")


def _lower(new, old, statistic: str):
    """The lower of two timings of one configuration; a timing beats an error, and a later error beats none."""
    if not isinstance(new, Measurement):
        return old if old is not None else new
    if isinstance(old, Measurement) and latency_ms(old, statistic) <= latency_ms(new, statistic):
        return old
    return new


def _row(config: CampaignConfig, target, input_shape, fingerprint: dict, given: SampledConfig,
         built: BuiltVariant, result: Measurement) -> MeasurementRow:
    layers = [LayerSpec(**layer) for layer in built.layers]
    return MeasurementRow(
        kind="model", model=config.model, widths=dict(given.widths), layers=list(built.layers),
        input_shape=tuple(input_shape), target=target.name, backend=target.backend, threads=target.threads,
        replicate=0, sample_tag=given.tag, macs=total_macs(layers), fingerprint_id=fingerprint_id(fingerprint),
        fingerprint=fingerprint, median_ms=result.median_ms, iqr_ms=result.iqr_ms, mad_ms=result.mad_ms,
        min_ms=result.min_ms, n_runs=len(result.samples_ms), attempts=result.attempts, stable=result.stable,
    )
