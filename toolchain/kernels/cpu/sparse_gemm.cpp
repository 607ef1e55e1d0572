// Edge-CPU sparse-weight x dense-activation GEMM and implicit-GEMM convolution, fp32.
//
// W is sparse (block-sparse BSR, or N:M with absolute column indices) in its GEMM view
// [O, K]. The activations are either a matrix X [B, K, L] (Y[b] = W @ X[b], [B, O, L]) or an
// NCHW image for a convolution, whose K = (kh, kw, C_in) columns are gathered on the fly
// (implicit GEMM: no im2col buffer); the output is NCHW. Portable C++: GCC/Clang vector
// extensions give AVX2 code on x86-64 and NEON code on aarch64; at::parallel_for (OpenMP)
// spreads the (batch, column-tile, row-chunk) tasks over torch's intra-op threads.
//
// Per task, a tile of kTile activation columns is packed into a contiguous [rows][kTile]
// buffer (zero past K and past the last column), then every output row block accumulates
// kRows x kTile results in registers while streaming its nonzeros.
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

// Packers fill dst[(kk - k_begin) * kTile + j] with activation (kk, col0 + j) of batch b for
// kk in [k_begin, k_end) and j < width; everything else in those rows is zero.
struct MatrixPacker {
  const float* x;  // [B, K, L]
  int64_t k, l;

  void operator()(int64_t b, int64_t k_begin, int64_t k_end, int64_t col0, int64_t width, float* dst) const {
    const float* x_b = x + b * k * l;
    for (int64_t kk = k_begin; kk < k_end; ++kk, dst += kTile) {
      std::memset(dst, 0, sizeof(float) * kTile);
      if (kk < k) std::memcpy(dst, x_b + kk * l + col0, sizeof(float) * width);
    }
  }
};

struct ConvPacker {
  const float* x;  // [B, C, H, W]
  int64_t c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, out_w;

  int64_t k() const { return kh * kw * c; }

  void operator()(int64_t b, int64_t k_begin, int64_t k_end, int64_t col0, int64_t width, float* dst) const {
    // The tile's output positions split into runs that share an output row; with stride 1
    // a run reads a contiguous stretch of one input row (one memcpy, clipped at the border).
    int64_t run_start[kTile + 1], run_top[kTile], run_left[kTile];
    int64_t n_runs = 0;
    for (int64_t j = 0; j < width; ++j) {
      const int64_t p = col0 + j;
      if (j == 0 || p % out_w == 0) {
        run_start[n_runs] = j;
        run_top[n_runs] = (p / out_w) * sh - ph;
        run_left[n_runs] = (p % out_w) * sw - pw;
        ++n_runs;
      }
    }
    run_start[n_runs] = width;
    const float* x_b = x + b * c * h * w;
    const int64_t taps = kh * kw;
    for (int64_t kk = k_begin; kk < k_end; ++kk, dst += kTile) {
      std::memset(dst, 0, sizeof(float) * kTile);
      if (kk >= taps * c) continue;
      const int64_t tap = kk / c, channel = kk % c;
      const int64_t dy = (tap / kw) * dh, dx = (tap % kw) * dw;
      const float* plane = x_b + channel * h * w;
      for (int64_t r = 0; r < n_runs; ++r) {
        const int64_t iy = run_top[r] + dy;
        if (iy < 0 || iy >= h) continue;
        const int64_t j0 = run_start[r], j1 = run_start[r + 1], ix0 = run_left[r] + dx;
        const float* row = plane + iy * w;
        if (sw == 1) {
          const int64_t lo = std::max(j0, j0 - ix0), hi = std::min(j1, j0 + w - ix0);
          if (hi > lo) std::memcpy(dst + lo, row + ix0 + (lo - j0), sizeof(float) * (hi - lo));
        } else {
          for (int64_t j = j0; j < j1; ++j) {
            const int64_t ix = ix0 + (j - j0) * sw;
            if (ix >= 0 && ix < w) dst[j] = row[ix];
          }
        }
      }
    }
  }
};

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


// Block-sparse W [O, K] (values [nnz_blocks, R, C], column-sorted cols, row_offsets) times
// the activations that pack() gathers; y is [B, O, L] (row stride l).
template <typename Packer>
void bsr_run(const Packer& pack, const float* wv, const int32_t* cv, const int32_t* ro, int64_t rb,
             int64_t cb, int64_t n_block_rows, int64_t k, int64_t batch, int64_t l, int64_t out_features,
             float* yv) {
  const int64_t k_pad = std::max<int64_t>(((k + cb - 1) / cb) * cb, 1);
  const Tiling t = make_tiling(batch, l, n_block_rows);
  // K is walked in chunks whose packed activations stay in L2; each block row keeps a cursor
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
        pack(b, bc0 * cb, bc1 * cb, col0, width, packed.data());
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
}

// N:M W (values [O, J], absolute columns cols [O, J]) times the activations pack() gathers.
template <typename Packer>
void nm_run(const Packer& pack, const float* wv, const int32_t* cv, int64_t nnz_per_row, int64_t k,
            int64_t batch, int64_t l, int64_t out_features, float* yv) {
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
        pack(b, 0, k, col0, width, packed.data());
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
}

void check_weight_and_input(const at::Tensor& values, const at::Tensor& cols, const at::Tensor& x,
                            int64_t x_dims) {
  TORCH_CHECK(x.dim() == x_dims, "x must have ", x_dims, " dims, got ", x.dim());
  TORCH_CHECK(x.scalar_type() == at::kFloat && values.scalar_type() == at::kFloat,
              "CPU sparse kernels support float32 only");
  TORCH_CHECK(x.is_contiguous() && values.is_contiguous() && cols.is_contiguous(),
              "x, values and cols must be contiguous");
  TORCH_CHECK(x.device().is_cpu() && values.device().is_cpu(), "CPU kernel got a non-CPU tensor");
  TORCH_CHECK(cols.scalar_type() == at::kInt, "cols must be int32");
}

void check_bsr(const at::Tensor& values, const at::Tensor& row_offsets, int64_t out_features) {
  TORCH_CHECK(values.dim() == 3, "values must be [nnz_blocks, R, C]");
  TORCH_CHECK(row_offsets.scalar_type() == at::kInt && row_offsets.is_contiguous(),
              "row_offsets must be contiguous int32");
  TORCH_CHECK((row_offsets.numel() - 1) * values.size(1) >= out_features,
              "row_offsets cover fewer rows than out_features");
}

// geometry = [kh, kw, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w]
ConvPacker conv_packer(const at::Tensor& x, at::IntArrayRef geometry, int64_t* out_h, int64_t* out_w) {
  TORCH_CHECK(geometry.size() == 8, "geometry must be [kh, kw, sh, sw, ph, pw, dh, dw]");
  const int64_t kh = geometry[0], kw = geometry[1], sh = geometry[2], sw = geometry[3];
  const int64_t ph = geometry[4], pw = geometry[5], dh = geometry[6], dw = geometry[7];
  const int64_t h = x.size(2), w = x.size(3);
  *out_h = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  *out_w = (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(*out_h > 0 && *out_w > 0, "convolution output would be empty");
  return ConvPacker{x.data_ptr<float>(), x.size(1), h, w, kh, kw, sh, sw, ph, pw, dh, dw, *out_w};
}

}  // namespace

// Y[b] = W @ X[b] for block-sparse W; x [B, K, L] → [B, O, L].
at::Tensor bsr_gemm(at::Tensor values, at::Tensor cols, at::Tensor row_offsets, at::Tensor x,
                    int64_t out_features) {
  check_weight_and_input(values, cols, x, 3);
  check_bsr(values, row_offsets, out_features);
  const int64_t batch = x.size(0), k = x.size(1), l = x.size(2);
  auto y = at::empty({batch, out_features, l}, x.options());
  bsr_run(MatrixPacker{x.data_ptr<float>(), k, l}, values.data_ptr<float>(), cols.data_ptr<int32_t>(),
          row_offsets.data_ptr<int32_t>(), values.size(1), values.size(2), row_offsets.numel() - 1, k, batch, l,
          out_features, y.data_ptr<float>());
  return y;
}

// Implicit-GEMM convolution with block-sparse W (GEMM view, K order (kh, kw, C_in)); x NCHW.
at::Tensor bsr_conv2d(at::Tensor values, at::Tensor cols, at::Tensor row_offsets, at::Tensor x,
                      int64_t out_features, at::IntArrayRef geometry) {
  check_weight_and_input(values, cols, x, 4);
  check_bsr(values, row_offsets, out_features);
  int64_t out_h = 0, out_w = 0;
  const ConvPacker pack = conv_packer(x, geometry, &out_h, &out_w);
  const int64_t batch = x.size(0);
  auto y = at::empty({batch, out_features, out_h, out_w}, x.options());
  bsr_run(pack, values.data_ptr<float>(), cols.data_ptr<int32_t>(), row_offsets.data_ptr<int32_t>(),
          values.size(1), values.size(2), row_offsets.numel() - 1, pack.k(), batch, out_h * out_w, out_features,
          y.data_ptr<float>());
  return y;
}

// Y[b] = W @ X[b] for N:M W given as values [O, J] and absolute columns [O, J].
at::Tensor nm_gemm(at::Tensor values, at::Tensor cols, at::Tensor x) {
  check_weight_and_input(values, cols, x, 3);
  TORCH_CHECK(values.dim() == 2 && cols.sizes() == values.sizes(), "values and cols must be [O, J]");
  const int64_t batch = x.size(0), k = x.size(1), l = x.size(2), out_features = values.size(0);
  auto y = at::empty({batch, out_features, l}, x.options());
  nm_run(MatrixPacker{x.data_ptr<float>(), k, l}, values.data_ptr<float>(), cols.data_ptr<int32_t>(),
         values.size(1), k, batch, l, out_features, y.data_ptr<float>());
  return y;
}

// Implicit-GEMM convolution with N:M W (columns in the (kh, kw, C_in) GEMM view); x NCHW.
at::Tensor nm_conv2d(at::Tensor values, at::Tensor cols, at::Tensor x, at::IntArrayRef geometry) {
  check_weight_and_input(values, cols, x, 4);
  TORCH_CHECK(values.dim() == 2 && cols.sizes() == values.sizes(), "values and cols must be [O, J]");
  int64_t out_h = 0, out_w = 0;
  const ConvPacker pack = conv_packer(x, geometry, &out_h, &out_w);
  const int64_t batch = x.size(0), out_features = values.size(0);
  auto y = at::empty({batch, out_features, out_h, out_w}, x.options());
  nm_run(pack, values.data_ptr<float>(), cols.data_ptr<int32_t>(), values.size(1), pack.k(), batch,
         out_h * out_w, out_features, y.data_ptr<float>());
  return y;
}

// Registered as torch.ops.toolchain_sparse.* (no pybind11: the extension builds faster).
TORCH_LIBRARY(toolchain_sparse, m) {
  m.def("bsr_gemm(Tensor values, Tensor cols, Tensor row_offsets, Tensor x, int out_features) -> Tensor");
  m.def("bsr_conv2d(Tensor values, Tensor cols, Tensor row_offsets, Tensor x, int out_features, "
        "int[] geometry) -> Tensor");
  m.def("nm_gemm(Tensor values, Tensor cols, Tensor x) -> Tensor");
  m.def("nm_conv2d(Tensor values, Tensor cols, Tensor x, int[] geometry) -> Tensor");
}

TORCH_LIBRARY_IMPL(toolchain_sparse, CPU, m) {
  m.impl("bsr_gemm", &bsr_gemm);
  m.impl("bsr_conv2d", &bsr_conv2d);
  m.impl("nm_gemm", &nm_gemm);
  m.impl("nm_conv2d", &nm_conv2d);
}
