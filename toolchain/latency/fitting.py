"""Train a predictor from the measurement database and score it on held-out configurations.

The held-out split is by configuration key (a hash), so it is deterministic and independent of insertion
order; re-measurements of one configuration (replicate > 0, the noise floor) are never trained on.
Configurations an allocator produced are split on their own (`FitConfig.allocator_heldout_fraction`) and
scored apart: `meta.allocator_heldout_metrics` is the predictor's score where the allocators use it.

Example:
    >>> config = FitConfig.for_target("runs/latency.db", "lpnet", Target("cpu"), models=("zoo:resnet18",))
    >>> predictor = fit_predictor(config)                                                 # doctest: +SKIP
    >>> predictor.meta.heldout_metrics["within_10pct"]                                    # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from toolchain import defaults
from toolchain.errors import ToolchainError
from toolchain.latency.features import spec_from_dict
from toolchain.latency.fingerprint import kind_fingerprint
from toolchain.latency.measure import latency_ms
from toolchain.latency.predictors import LatencyPredictor, LatencyQuery, create_predictor, predictor_class
from toolchain.latency.predictors.artifact import ArtifactMeta, training_data_hash
from toolchain.latency.sampling import is_allocator_tag
from toolchain.latency.spread import board_spread
from toolchain.latency.store import MeasurementRow, MeasurementStore, now_utc
from toolchain.targets import DEFAULT_BACKEND, Target


@dataclass(frozen=True)
class FitConfig:
    """What to fit on which rows; target, threads and statistic default as in `toolchain.defaults`, the
    backend to the device's default backend."""

    db_path: str
    predictor: str
    models: tuple[str, ...] = ()  # empty: every model measured on the target (lpnet needs exactly one)
    target: str = defaults.TARGET
    backend: str | None = defaults.BACKEND  # None: the target's default backend
    threads: int = defaults.THREADS
    heldout_fraction: float = 0.2
    max_train: int = 0  # 0: use every training configuration
    train_steps: int = 0  # 0: the predictor's default number of optimiser steps
    statistic: str = defaults.STATISTIC  # per-configuration latency to learn: median or min of the timed runs
    # Configurations an allocator produced (sample tag "alloc:..."; toolchain.latency.allocator_sampling): this
    # share of them is held out and scored apart (meta.allocator_heldout_metrics); the rest is trained on
    # unless `train_on_allocator_configs` is False (then the score says how a predictor fitted on sampled
    # configurations alone does on them).
    allocator_heldout_fraction: float = 0.5
    train_on_allocator_configs: bool = True

    @classmethod
    def for_target(cls, db_path: str, predictor: str, target: Target, **fields) -> FitConfig:
        """A fit on the rows measured on `target`, learning its statistic.

        >>> FitConfig.for_target("runs/latency.db", "lpnet", Target("cpu", statistic="median")).statistic
        'median'
        """
        runtime = target.resolve()
        return cls(db_path=db_path, predictor=predictor, target=runtime.name, backend=runtime.backend,
                   threads=runtime.threads, statistic=target.statistic, **fields)

    def __post_init__(self):
        if self.backend is None:  # rows are stored under the backend's name, never under None
            object.__setattr__(self, "backend", DEFAULT_BACKEND.get(self.target))


def is_heldout(config_key: str, heldout_fraction: float) -> bool:
    return int(config_key[:8], 16) % 1000 < heldout_fraction * 1000


def load_rows(store: MeasurementStore, config: FitConfig) -> dict[str, list[MeasurementRow]]:
    """Model rows (first measurement of each configuration) per model, with clear errors when empty."""
    models = config.models or tuple(
        sorted(
            {
                m
                for (m, t, b, th, k, _) in store.summary()
                if (t, b, th, k) == (config.target, config.backend, config.threads, "model")
            }
        )
    )
    label = f"{config.target}/{config.backend}/{config.threads}t"
    if not models:
        raise ToolchainError(
            f"measurement database {store.path} holds no measurements for {label}; it has: {_describe(store)}"
        )
    rows = {}
    for model in models:
        found = [r for r in store.rows(model, config.target, config.backend, config.threads) if r.replicate == 0]
        if not found:
            raise ToolchainError(
                f"measurement database {store.path} holds no measurements of {model} on "
                f"{label}; it has: {_describe(store)}"
            )
        rows[model] = found
    fingerprints = {r.fingerprint_id for found in rows.values() for r in found}
    if len(fingerprints) > 1:
        raise ToolchainError(
            f"measurements for {label} come from {len(fingerprints)} different machines "
            f"({sorted(fingerprints)}); fit on one machine's database"
        )
    return rows


def _describe(store: MeasurementStore) -> str:
    summary = store.summary()
    if not summary:
        return "nothing (empty database)"
    return "; ".join(f"{m} on {t}/{b}/{th}t: {n} {k} rows" for m, t, b, th, k, n in summary)


def split_queries(rows: list[MeasurementRow], heldout_fraction: float,
                  statistic: str = defaults.STATISTIC) -> tuple[list[LatencyQuery], list[LatencyQuery]]:
    """Split by a hash of each configuration's key (stable across runs and machines). A small set whose hashes all
    fall on the training side still holds out one configuration (the one hashed lowest): the split of a handful
    of configurations must not depend on luck, e.g. on the folder a model file happens to live in."""
    train, heldout, train_keys = [], [], []
    for row in rows:
        if latency_ms(row, statistic) <= 0:  # not a measurement of a model (databases before the summarize fix)
            continue
        query = LatencyQuery.from_row(row, statistic)
        if is_heldout(row.config_key, heldout_fraction):
            heldout.append(query)
        else:
            train.append(query)
            train_keys.append(row.config_key)
    if not heldout and heldout_fraction > 0 and len(train) >= 2:
        lowest = min(range(len(train)), key=lambda i: int(train_keys[i][:8], 16) % 1000)
        heldout.append(train.pop(lowest))
    return train, heldout


@dataclass(frozen=True)
class Split:
    """One model's rows as training and held-out queries; held-out allocator configurations kept apart."""

    train: list[LatencyQuery]
    heldout: list[LatencyQuery]  # sampled configurations (dense, uniform, Sobol, random)
    allocator_heldout: list[LatencyQuery]  # configurations an allocator produced
    n_allocator_train: int = 0


def split_rows(rows: list[MeasurementRow], config: FitConfig) -> Split:
    """Sampled and allocator-produced configurations, each split by the hash of their keys.

    >>> split_rows([], FitConfig("m.db", "macs"))
    Split(train=[], heldout=[], allocator_heldout=[], n_allocator_train=0)
    """
    sampled = [r for r in rows if not is_allocator_tag(r.sample_tag)]
    allocated = [r for r in rows if is_allocator_tag(r.sample_tag)]
    train, heldout = split_queries(sampled, config.heldout_fraction, config.statistic)
    allocator_train, allocator_heldout = split_queries(allocated, config.allocator_heldout_fraction,
                                                       config.statistic)
    train = train[: config.max_train or None]
    if not config.train_on_allocator_configs:
        allocator_train = []
    return Split(train + allocator_train, heldout, allocator_heldout, len(allocator_train))


def fit_predictor(config: FitConfig) -> LatencyPredictor:
    """Fit `config.predictor` on the stored measurements; its metadata carries the held-out metrics."""
    with MeasurementStore(config.db_path, create=False) as store:
        rows_by_model = load_rows(store, config)
        single_ops = store.rows(target=config.target, backend=config.backend, threads=config.threads, kind="layer")
        first = next(iter(rows_by_model.values()))[0]
        group_names: tuple[str, ...] = ()
        dense_widths: tuple[int, ...] = ()
        if config.predictor == "lpnet":
            if len(rows_by_model) != 1:
                raise ToolchainError(
                    f"lpnet models one architecture; pick one with --model from {sorted(rows_by_model)}"
                )
            groups = store.groups(first.model, first.input_shape)
            group_names = tuple(g[0] for g in groups)
            dense_widths = tuple(int(g[1]) for g in groups)
        device_spread = board_spread(store.device_timings(first.fingerprint_id), config.statistic)
    single_ops = [r for r in single_ops if r.model in rows_by_model]
    train, heldout, allocator_heldout, n_allocator_train = [], [], [], 0
    for rows in rows_by_model.values():
        split = split_rows(rows, config)
        train += split.train
        heldout += split.heldout
        allocator_heldout += split.allocator_heldout
        n_allocator_train += split.n_allocator_train
    if not train or not heldout:
        raise ToolchainError(
            f"need at least one training and one held-out configuration, got {len(train)} and "
            f"{len(heldout)}; profile more samples"
        )
    n_configurations = len(train)
    if predictor_class(config.predictor).trains_on_single_ops:
        train += [LatencyQuery.from_row(r, config.statistic) for r in single_ops]
    meta = ArtifactMeta(
        predictor=config.predictor,
        target=config.target,
        backend=config.backend,
        threads=config.threads,
        fingerprint_id=first.fingerprint_id,
        fingerprint=kind_fingerprint(first.fingerprint),
        models=tuple(rows_by_model),
        input_shapes={m: list(rows[0].input_shape) for m, rows in rows_by_model.items()},
        group_names=group_names,
        dense_widths=dense_widths,
        training_data_hash=training_data_hash([(q.config_key, q.measured_ms) for q in train]),
        n_train=n_configurations,
        n_allocator_train=n_allocator_train,
        n_single_ops=len(train) - n_configurations,
        created_at=now_utc(),
        statistic=config.statistic,
        device_spread=device_spread,
    )
    predictor = create_predictor(config.predictor, meta)
    if config.train_steps:
        predictor.train_steps = config.train_steps
    if hasattr(predictor, "set_table"):
        predictor.set_table([(spec_from_dict(r.widths), latency_ms(r, config.statistic)) for r in single_ops])
    predictor.fit(train)
    predictor.meta = replace(predictor.meta, heldout_metrics=predictor.evaluate(heldout),
                             allocator_heldout_metrics=predictor.evaluate(allocator_heldout) if allocator_heldout
                             else {})
    return predictor
