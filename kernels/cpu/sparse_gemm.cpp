// Edge-CPU sparse-weight x dense-activation GEMM: Y[b] = W @ X[b], fp32.
//
// W is sparse (block-sparse BSR or N:M with absolute column indices), X is [B, K, L]
// (K-major columns, as torch.nn.functional.unfold returns them), Y is [B, O, L] (so a
// convolution's output is already NCHW). Portable C++: GCC/Clang vector extensions give
// AVX2 code on x86-64 and NEON code on aarch64; at::parallel_for (OpenMP) spreads the
// (batch, column-tile, row-chunk) tasks over torch's intra-op threads.
//
// Per task, a tile of kTile activation columns is packed into a contiguous [K_pad][kTile]
// buffer (zero rows past K, optional row permutation), then every output row block
// accumulates kRows x kTile results in registers while streaming its nonzeros.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kVec = 8;           // floats per vector register (AVX2 / 2x NEON)
constexpr int kTileVecs = 3;          // vector registers per output row of a tile
constexpr int64_t kTile = kTileVecs * kVec;  // activation columns per packed tile
constexpr int64_t kRows = 4;          // output rows accumulated together
constexpr int64_t kChunkRows = 1024;  // activation rows packed at a time (96 KiB: stays in L2)

typedef float vec8 __attribute__((vector_size(32), aligned(4)));

inline vec8 load8(const float* p) { return *reinterpret_cast<const vec8*>(p); }

// Packs rows [k_begin, k_end) and columns [col0, col0 + width) of x_b ([K, L]) into packed
// ([k_end - k_begin][kTile]); rows past K and columns past width are zero.
void pack_tile(const float* x_b, int64_t k, int64_t l, int64_t k_begin, int64_t k_end, int64_t col0,
               int64_t width, const int32_t* perm, float* packed) {
  for (int64_t kk = k_begin; kk < k_end; ++kk) {
    float* dst = packed + (kk - k_begin) * kTile;
    if (kk >= k) {
      std::memset(dst, 0, sizeof(float) * kTile);
      continue;
    }
    const int64_t src_row = perm ? perm[kk] : kk;
    const float* src = x_b + src_row * l + col0;
    if (width == kTile) {
      std::memcpy(dst, src, sizeof(float) * kTile);
    } else {
      std::memcpy(dst, src, sizeof(float) * width);
      std::memset(dst + width, 0, sizeof(float) * (kTile - width));
    }
  }
}

// Writes (or, with accumulate, adds) NR accumulated rows into y_b[row0.., col0..col0+width).
template <int NR, int TV>
inline void store_rows(const vec8 (&acc)[NR][TV], float* y_b, int64_t l, int64_t row0, int64_t col0,
                       int64_t width, bool accumulate = false) {
  for (int r = 0; r < NR; ++r) {
    float* dst = y_b + (row0 + r) * l + col0;
    float tmp[TV * kVec];
    std::memcpy(tmp, &acc[r][0], sizeof(tmp));
    if (accumulate) {
      for (int64_t i = 0; i < width; ++i) dst[i] += tmp[i];
    } else {
      std::memcpy(dst, tmp, sizeof(float) * width);
    }
  }
}

// NR rows (r0 .. r0+NR-1 inside the R-row block row) over the nonzero blocks [start, end).
// Accumulators stay local (registers) and are stored once at the end. CB > 0 fixes the
// block width at compile time so that the column loop unrolls; CB == 0 reads it from cb.
// TV vectors per row are computed: fewer than kTileVecs on the last, narrower column tile.
template <int NR, int CB, int TV>
void bsr_rows(const float* values, const int32_t* cols, int64_t start, int64_t end, int64_t rb,
              int64_t cb, int64_t r0, const float* packed, float* y_b, int64_t l, int64_t row0,
              int64_t col0, int64_t width, bool accumulate) {
  const int64_t n_cols = CB > 0 ? CB : cb;
  vec8 acc[NR][TV];
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < TV; ++v) acc[r][v] = vec8{};
  for (int64_t blk = start; blk < end; ++blk) {
    const float* w = values + blk * rb * n_cols + r0 * n_cols;
    const float* xp = packed + static_cast<int64_t>(cols[blk]) * n_cols * kTile;
    for (int64_t c = 0; c < n_cols; ++c) {
      vec8 x[TV];
      for (int v = 0; v < TV; ++v) x[v] = load8(xp + c * kTile + v * kVec);
      for (int r = 0; r < NR; ++r) {
        const float wv = w[r * n_cols + c];
        for (int v = 0; v < TV; ++v) acc[r][v] += wv * x[v];
      }
    }
  }
  store_rows<NR, TV>(acc, y_b, l, row0, col0, width, accumulate);
}

template <int NR, int TV>
void bsr_rows_by_width(const float* values, const int32_t* cols, int64_t start, int64_t end, int64_t rb,
                       int64_t cb, int64_t r0, const float* packed, float* y_b, int64_t l, int64_t row0,
                       int64_t col0, int64_t width, bool accumulate) {
  switch (cb) {
    case 4:
      return bsr_rows<NR, 4, TV>(values, cols, start, end, rb, cb, r0, packed, y_b, l, row0, col0, width,
                             accumulate);
    case 16:
      return bsr_rows<NR, 16, TV>(values, cols, start, end, rb, cb, r0, packed, y_b, l, row0, col0, width,
                              accumulate);
    default:
      return bsr_rows<NR, 0, TV>(values, cols, start, end, rb, cb, r0, packed, y_b, l, row0, col0, width,
                                 accumulate);
  }
}

template <int NR>
void bsr_rows_dispatch(const float* values, const int32_t* cols, int64_t start, int64_t end, int64_t rb,
                       int64_t cb, int64_t r0, const float* packed, float* y_b, int64_t l, int64_t row0,
                       int64_t col0, int64_t width, bool accumulate) {
  static_assert(kTileVecs == 3, "the dispatch below covers 1..3 vectors");
  switch ((width + kVec - 1) / kVec) {
    case 1:
      return bsr_rows_by_width<NR, 1>(values, cols, start, end, rb, cb, r0, packed, y_b, l, row0, col0,
                                      width, accumulate);
    case 2:
      return bsr_rows_by_width<NR, 2>(values, cols, start, end, rb, cb, r0, packed, y_b, l, row0, col0,
                                      width, accumulate);
    default:
      return bsr_rows_by_width<NR, 3>(values, cols, start, end, rb, cb, r0, packed, y_b, l, row0, col0,
                                      width, accumulate);
  }
}

template <int NR, int TV>
void nm_rows_by_width(const float* values, const int32_t* cols, int64_t nnz_per_row, int64_t row0,
                      const float* packed, float* y_b, int64_t l, int64_t col0, int64_t width) {
  vec8 acc[NR][TV];
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < TV; ++t) acc[r][t] = vec8{};
  const float* v = values + row0 * nnz_per_row;
  const int32_t* ci = cols + row0 * nnz_per_row;
  for (int64_t j = 0; j < nnz_per_row; ++j) {
    for (int r = 0; r < NR; ++r) {
      const float* xp = packed + static_cast<int64_t>(ci[r * nnz_per_row + j]) * kTile;
      const float wv = v[r * nnz_per_row + j];
      for (int t = 0; t < TV; ++t) acc[r][t] += wv * load8(xp + t * kVec);
    }
  }
  store_rows<NR, TV>(acc, y_b, l, row0, col0, width);
}

template <int NR>
void nm_rows(const float* values, const int32_t* cols, int64_t nnz_per_row, int64_t row0,
             const float* packed, float* y_b, int64_t l, int64_t col0, int64_t width) {
  switch ((width + kVec - 1) / kVec) {
    case 1:
      return nm_rows_by_width<NR, 1>(values, cols, nnz_per_row, row0, packed, y_b, l, col0, width);
    case 2:
      return nm_rows_by_width<NR, 2>(values, cols, nnz_per_row, row0, packed, y_b, l, col0, width);
    default:
      return nm_rows_by_width<NR, 3>(values, cols, nnz_per_row, row0, packed, y_b, l, col0, width);
  }
}

struct Tiling {
  int64_t n_col_tiles, n_row_chunks, rows_per_chunk, n_tasks;
};

// Splits the work into (batch, column tile, row chunk) tasks, enough to feed every thread.
Tiling make_tiling(int64_t batch, int64_t l, int64_t n_row_units) {
  Tiling t{};
  t.n_col_tiles = (l + kTile - 1) / kTile;
  const int64_t outer = batch * t.n_col_tiles;
  const int64_t wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  t.n_row_chunks = std::max<int64_t>(1, std::min<int64_t>(n_row_units, (wanted + outer - 1) / outer));
  t.rows_per_chunk = (n_row_units + t.n_row_chunks - 1) / t.n_row_chunks;
  t.n_row_chunks = (n_row_units + t.rows_per_chunk - 1) / t.rows_per_chunk;
  t.n_tasks = outer * t.n_row_chunks;
  return t;
}

void check_common(const at::Tensor& x, const at::Tensor& values) {
  TORCH_CHECK(x.dim() == 3, "x must be [B, K, L], got ", x.dim(), " dims");
  TORCH_CHECK(x.scalar_type() == at::kFloat && values.scalar_type() == at::kFloat,
              "CPU sparse kernels support float32 only");
  TORCH_CHECK(x.is_contiguous() && values.is_contiguous(), "x and values must be contiguous");
  TORCH_CHECK(x.device().is_cpu() && values.device().is_cpu(), "CPU kernel got a non-CPU tensor");
}

}  // namespace

// values [nnz_blocks, R, C], cols int32 [nnz_blocks], row_offsets int32 [O_blocks + 1],
// x [B, K, L]; perm int32 [K] maps the weight's column order to x's rows (empty: identity).
at::Tensor bsr_gemm(at::Tensor values, at::Tensor cols, at::Tensor row_offsets,
                       at::Tensor x, at::Tensor perm, int64_t out_features) {
  check_common(x, values);
  TORCH_CHECK(values.dim() == 3, "values must be [nnz_blocks, R, C]");
  TORCH_CHECK(cols.scalar_type() == at::kInt && row_offsets.scalar_type() == at::kInt,
              "cols and row_offsets must be int32");
  const int64_t batch = x.size(0), k = x.size(1), l = x.size(2);
  const int64_t rb = values.size(1), cb = values.size(2);
  const int64_t n_block_rows = row_offsets.numel() - 1;
  TORCH_CHECK(n_block_rows * rb >= out_features, "row_offsets cover fewer rows than out_features");
  const int64_t k_pad = std::max<int64_t>(((k + cb - 1) / cb) * cb, 1);
  TORCH_CHECK(perm.numel() == 0 || perm.numel() == k, "perm must be empty or have K entries");

  auto y = at::empty({batch, out_features, l}, x.options());
  const float* xv = x.data_ptr<float>();
  const float* wv = values.data_ptr<float>();
  const int32_t* cv = cols.data_ptr<int32_t>();
  const int32_t* ro = row_offsets.data_ptr<int32_t>();
  const int32_t* pv = perm.numel() ? perm.data_ptr<int32_t>() : nullptr;
  float* yv = y.data_ptr<float>();
  const Tiling t = make_tiling(batch, l, n_block_rows);

  // K is walked in chunks whose packed activations stay in L1; each block row keeps a cursor
  // into its (column-sorted) blocks and the partial sums are added into y.
  const int64_t n_block_cols = k_pad / cb;
  const int64_t chunk_block_cols = std::max<int64_t>(1, kChunkRows / cb);
  at::parallel_for(0, t.n_tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> packed(chunk_block_cols * cb * kTile);
    std::vector<int32_t> cursor(t.rows_per_chunk);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t outer = task / t.n_row_chunks, chunk = task % t.n_row_chunks;
      const int64_t b = outer / t.n_col_tiles, col0 = (outer % t.n_col_tiles) * kTile;
      const int64_t width = std::min(kTile, l - col0);
      const int64_t br_begin = chunk * t.rows_per_chunk;
      const int64_t br_end = std::min(n_block_rows, br_begin + t.rows_per_chunk);
      for (int64_t br = br_begin; br < br_end; ++br) cursor[br - br_begin] = ro[br];
      float* y_b = yv + b * out_features * l;
      for (int64_t bc0 = 0; bc0 < n_block_cols; bc0 += chunk_block_cols) {
        const int64_t bc1 = std::min(n_block_cols, bc0 + chunk_block_cols);
        pack_tile(xv + b * k * l, k, l, bc0 * cb, bc1 * cb, col0, width, pv, packed.data());
        const float* chunk_base = packed.data() - bc0 * cb * kTile;
        const bool accumulate = bc0 > 0;
        for (int64_t br = br_begin; br < br_end; ++br) {
          const int64_t first = cursor[br - br_begin];
          int64_t last = first;
          while (last < ro[br + 1] && cv[last] < bc1) ++last;
          cursor[br - br_begin] = static_cast<int32_t>(last);
          if (first == last && accumulate) continue;
          const int64_t row_begin = br * rb;
          const int64_t rows = std::min(rb, out_features - row_begin);
          int64_t r0 = 0;
          for (; r0 + kRows <= rows; r0 += kRows) {
            bsr_rows_dispatch<kRows>(wv, cv, first, last, rb, cb, r0, chunk_base, y_b, l, row_begin + r0,
                                     col0, width, accumulate);
          }
          for (; r0 < rows; ++r0) {
            bsr_rows_dispatch<1>(wv, cv, first, last, rb, cb, r0, chunk_base, y_b, l, row_begin + r0, col0,
                                 width, accumulate);
          }
        }
      }
    }
  });
  return y;
}

// values [O, J] (N:M kept values, zero-padded), cols int32 [O, J] absolute rows of x.
at::Tensor nm_gemm(at::Tensor values, at::Tensor cols, at::Tensor x) {
  check_common(x, values);
  TORCH_CHECK(values.dim() == 2 && cols.sizes() == values.sizes(), "values and cols must be [O, J]");
  TORCH_CHECK(cols.scalar_type() == at::kInt && cols.is_contiguous(), "cols must be contiguous int32");
  const int64_t batch = x.size(0), k = x.size(1), l = x.size(2);
  const int64_t out_features = values.size(0), nnz_per_row = values.size(1);

  auto y = at::empty({batch, out_features, l}, x.options());
  const float* xv = x.data_ptr<float>();
  const float* wv = values.data_ptr<float>();
  const int32_t* cv = cols.data_ptr<int32_t>();
  float* yv = y.data_ptr<float>();
  const int64_t n_row_units = (out_features + kRows - 1) / kRows;
  const Tiling t = make_tiling(batch, l, n_row_units);

  at::parallel_for(0, t.n_tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> packed(std::max<int64_t>(k, 1) * kTile);
    int64_t packed_for = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t outer = task / t.n_row_chunks, chunk = task % t.n_row_chunks;
      const int64_t b = outer / t.n_col_tiles, col0 = (outer % t.n_col_tiles) * kTile;
      const int64_t width = std::min(kTile, l - col0);
      if (packed_for != outer) {
        pack_tile(xv + b * k * l, k, l, 0, k, col0, width, nullptr, packed.data());
        packed_for = outer;
      }
      float* y_b = yv + b * out_features * l;
      const int64_t row_end = std::min(out_features, (chunk + 1) * t.rows_per_chunk * kRows);
      int64_t row = chunk * t.rows_per_chunk * kRows;
      for (; row + kRows <= row_end; row += kRows) {
        nm_rows<kRows>(wv, cv, nnz_per_row, row, packed.data(), y_b, l, col0, width);
      }
      for (; row < row_end; ++row) {
        nm_rows<1>(wv, cv, nnz_per_row, row, packed.data(), y_b, l, col0, width);
      }
    }
  });
  return y;
}

// Registered as torch.ops.toolchain_sparse.* (no pybind11: the extension builds faster).
TORCH_LIBRARY(toolchain_sparse, m) {
  m.def("bsr_gemm(Tensor values, Tensor cols, Tensor row_offsets, Tensor x, Tensor perm, int out_features) -> Tensor");
  m.def("nm_gemm(Tensor values, Tensor cols, Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(toolchain_sparse, CPU, m) {
  m.impl("bsr_gemm", &bsr_gemm);
  m.impl("nm_gemm", &nm_gemm);
}
