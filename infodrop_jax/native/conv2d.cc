// 2-D features-last convolutions for XLA:CPU, as XLA FFI handlers (infodrop_jax/native/__init__.py builds and
// registers them; infodrop_jax/convolution.py uses them on CPU). float32, AVX-512F. Shapes: x (N, H, W, C), kernel
// (KH, KW, C, O), output and output gradient (N, P, Q, O); strides (sh, sw) and the padding before (pad_h, pad_w).
//
// * infodrop_kernel_gradient:
//     dw[i][j][c][o] = sum over n, p, q of x[n][p*sh + i - pad_h][q*sw + j - pad_w][c] * g[n][p][q][o].
//   XLA:CPU computes it with Eigen as a convolution with a huge window after transposing both operands, up to 2.2x
//   slower than this (benchmarks/RESULTS.md). Here one image's x and g at a time stay in cache while every (tap,
//   8 input channels, <= 48 output channels) tile of dw accumulates over them in AVX-512 registers: 8 broadcasts of
//   x and <= 3 vector loads of g feed <= 24 FMAs per output pixel. Needs C % 8 == 0.
// * infodrop_conv_forward:
//     y[n][p][q][o] = sum over i, j, c of x[n][p*sh + i - pad_h][q*sw + j - pad_w][c] * w[i][j][c][o].
//   Output-stationary tiles of 8 pixels of a row by <= 48 output channels; 8 broadcasts of x and <= 3 vector loads
//   of w feed <= 24 FMAs per input channel. Faster than Eigen's for narrow layers only (the Python side uses it
//   there).
//
// The batch is split over the XLA:CPU intra-op thread pool (ParallelParts). Partial kernel gradients are summed
// in a fixed order, so results do not depend on scheduling (they do, to float rounding, on the pool's size).
// Bad shapes return an InvalidArgument error.
#if !defined(__AVX512F__)
#error "infodrop_jax.native needs a CPU with AVX-512F: -march=native found none here, so XLA's kernels are used"
#endif
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kRows = 8;  // Input channels per register tile (x broadcasts).
constexpr int kMaxVectors = 3;  // Output channels per register tile, in 16-float vectors.

int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

struct Shape {
  int64_t n, h, w, c, p, q, o, kh, kw, sh, sw, pad_h, pad_w;
};

// Accumulates one image row's contribution into the tile accumulators held in registers.
template <int NV>
inline __attribute__((always_inline)) void RowTile(const float* __restrict xp, const float* __restrict gp,
                                                   int64_t count, int64_t x_step, int64_t o, __mmask16 tail,
                                                   float* __restrict acc) {
  __m512 a[kRows][NV];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < NV; ++v) a[r][v] = _mm512_load_ps(acc + (r * NV + v) * 16);
  for (int64_t k = 0; k < count; ++k) {
    __m512 gv[NV];
    for (int v = 0; v < NV; ++v)
      gv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(tail, gp + 16 * v) : _mm512_loadu_ps(gp + 16 * v);
    for (int r = 0; r < kRows; ++r) {
      const __m512 xv = _mm512_set1_ps(xp[r]);
      for (int v = 0; v < NV; ++v) a[r][v] = _mm512_fmadd_ps(xv, gv[v], a[r][v]);
    }
    xp += x_step;
    gp += o;
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < NV; ++v) _mm512_store_ps(acc + (r * NV + v) * 16, a[r][v]);
}

// One image's contribution to the dw tile (tap i, j; channels c0..c0+7; outputs o0..o0+16*NV-1), added to out.
template <int NV>
void ImageTile(const Shape& s, const float* x, const float* g, int64_t i, int64_t j, int64_t c0, int64_t o0,
               __mmask16 tail, float* out) {
  alignas(64) float acc[kRows * kMaxVectors * 16] = {};
  const int64_t q_lo = std::max<int64_t>(0, FloorDiv(s.pad_w - j + s.sw - 1, s.sw));
  const int64_t q_hi = std::min<int64_t>(s.q, FloorDiv(s.w - 1 - j + s.pad_w, s.sw) + 1);
  if (q_hi <= q_lo) return;
  for (int64_t p = 0; p < s.p; ++p) {
    const int64_t row = p * s.sh + i - s.pad_h;
    if (row < 0 || row >= s.h) continue;
    const float* xp = x + (row * s.w + q_lo * s.sw + j - s.pad_w) * s.c + c0;
    const float* gp = g + (p * s.q + q_lo) * s.o + o0;
    RowTile<NV>(xp, gp, q_hi - q_lo, s.sw * s.c, s.o, tail, acc);
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < NV; ++v) {
      float* d = out + (c0 + r) * s.o + o0 + 16 * v;
      const __mmask16 m = v == NV - 1 ? tail : static_cast<__mmask16>(0xFFFF);
      _mm512_mask_storeu_ps(d, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, d), _mm512_load_ps(acc + (r * NV + v) * 16)));
    }
}

// Images [n0, n1) into out (zeroed here), every tile of every image while its x and g are in cache.
void Images(const Shape& s, const float* x, const float* g, int64_t n0, int64_t n1, float* out) {
  std::memset(out, 0, sizeof(float) * s.kh * s.kw * s.c * s.o);
  for (int64_t n = n0; n < n1; ++n) {
    const float* xn = x + n * s.h * s.w * s.c;
    const float* gn = g + n * s.p * s.q * s.o;
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j) {
        float* tap = out + (i * s.kw + j) * s.c * s.o;
        for (int64_t c0 = 0; c0 < s.c; c0 += kRows)
          for (int64_t o0 = 0; o0 < s.o; o0 += 16 * kMaxVectors) {
            const int64_t block = std::min<int64_t>(16 * kMaxVectors, s.o - o0);
            const int vectors = static_cast<int>((block + 15) / 16);
            const __mmask16 tail = block % 16 ? static_cast<__mmask16>((1u << (block % 16)) - 1) : 0xFFFF;
            if (vectors == 3) ImageTile<3>(s, xn, gn, i, j, c0, o0, tail, tap);
            else if (vectors == 2) ImageTile<2>(s, xn, gn, i, j, c0, o0, tail, tap);
            else ImageTile<1>(s, xn, gn, i, j, c0, o0, tail, tap);
          }
      }
  }
}

// Runs body(part) for part in [0, parts) on the XLA:CPU intra-op pool and the calling thread. The caller takes parts
// too and then waits only for parts another thread has started, so a busy or blocked pool cannot deadlock it.
template <typename Body>
void ParallelParts(ffi::ThreadPool& pool, int64_t parts, Body body) {
  struct State {
    explicit State(Body b, int64_t p) : body(std::move(b)), parts(p) {}
    Body body;
    int64_t parts;
    std::atomic<int64_t> next{0};
    int64_t finished = 0;
    std::mutex mutex;
    std::condition_variable all_done;
    void Work() {
      for (int64_t part; (part = next.fetch_add(1)) < parts;) {
        body(part);
        std::lock_guard<std::mutex> lock(mutex);
        if (++finished == parts) all_done.notify_all();
      }
    }
  };
  auto state = std::make_shared<State>(std::move(body), parts);
  for (int64_t task = 1; task < parts; ++task) pool.Schedule([state] { state->Work(); });
  state->Work();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->all_done.wait(lock, [&] { return state->finished == state->parts; });
}

int64_t Parts(ffi::ThreadPool& pool, int64_t images) {
  return std::max<int64_t>(1, std::min<int64_t>(std::max<int64_t>(1, pool.num_threads()), images));
}

ffi::Error KernelGradient(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                          ffi::ResultBuffer<ffi::F32> dw, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                          int64_t pad_w) {
  const auto xd = x.dimensions(), gd = g.dimensions(), wd = dw->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || wd.size() != 4)
    return ffi::Error::InvalidArgument("kernel_gradient: expected x (N,H,W,C), g (N,P,Q,O), dw (KH,KW,C,O)");
  const Shape s{xd[0], xd[1], xd[2], xd[3], gd[1], gd[2], gd[3], wd[0], wd[1], stride_h, stride_w, pad_h, pad_w};
  if (gd[0] != s.n || wd[2] != s.c || wd[3] != s.o || s.c % kRows != 0 || s.sh < 1 || s.sw < 1)
    return ffi::Error::InvalidArgument("kernel_gradient: shapes do not match, or C is not a multiple of 8");
  const int64_t size = s.kh * s.kw * s.c * s.o;
  // Each part sums its images into its own buffer (at most kScratchBytes of them); the buffers are added in a
  // fixed order afterwards, so the result does not depend on scheduling (it does on the number of parts: the
  // pool's threads).
  constexpr int64_t kScratchBytes = int64_t{256} << 20;
  const int64_t parts = std::max<int64_t>(
      1, std::min<int64_t>(Parts(pool, s.n), 1 + kScratchBytes / std::max<int64_t>(1, size * 4)));
  std::vector<std::unique_ptr<float[]>> scratch;
  for (int64_t part = 1; part < parts; ++part) scratch.emplace_back(new float[size]);  // Images zeroes it.
  float* out = dw->typed_data();
  const float* xs = x.typed_data();
  const float* gs = g.typed_data();
  ParallelParts(pool, parts, [&, s](int64_t part) {
    Images(s, xs, gs, s.n * part / parts, s.n * (part + 1) / parts, part ? scratch[part - 1].get() : out);
  });
  if (!scratch.empty()) {
    const int64_t chunks = std::min<int64_t>(Parts(pool, size), (size + 4095) / 4096);
    ParallelParts(pool, chunks, [&](int64_t chunk) {
      for (int64_t k = size * chunk / chunks, end = size * (chunk + 1) / chunks; k < end; ++k)
        for (const auto& add : scratch) out[k] += add[k];
    });
  }
  return ffi::Error::Success();
}

// ---- Forward convolution.

constexpr int kPixels = 8;  // Output pixels (along a row) per register tile (x broadcasts).
constexpr int64_t kBlock = 16 * kMaxVectors;  // Output channels per register tile.

// Adds sum over c of x[k][c] * w[c][o0..] to the tile accumulators (kept in memory between taps, in registers here:
// 8 broadcasts of x and NV vector loads of w feed 8*NV FMAs per input channel).
template <int NV>
inline __attribute__((always_inline)) void ChannelLoop(const float* const* __restrict xp, const float* __restrict wp,
                                                       int64_t channels, int64_t o, __mmask16 tail,
                                                       float* __restrict acc) {
  __m512 a0[NV], a1[NV], a2[NV], a3[NV], a4[NV], a5[NV], a6[NV], a7[NV];
  const float* __restrict x0 = xp[0];
  const float* __restrict x1 = xp[1];
  const float* __restrict x2 = xp[2];
  const float* __restrict x3 = xp[3];
  const float* __restrict x4 = xp[4];
  const float* __restrict x5 = xp[5];
  const float* __restrict x6 = xp[6];
  const float* __restrict x7 = xp[7];
#define INFODROP_LOAD(k) for (int v = 0; v < NV; ++v) a##k[v] = _mm512_load_ps(acc + (k * NV + v) * 16);
  INFODROP_LOAD(0) INFODROP_LOAD(1) INFODROP_LOAD(2) INFODROP_LOAD(3)
  INFODROP_LOAD(4) INFODROP_LOAD(5) INFODROP_LOAD(6) INFODROP_LOAD(7)
#undef INFODROP_LOAD
  for (int64_t c = 0; c < channels; ++c, wp += o) {
    __m512 wv[NV];
    for (int v = 0; v < NV; ++v)
      wv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(tail, wp + 16 * v) : _mm512_loadu_ps(wp + 16 * v);
#define INFODROP_FMA(k)                                                                     \
  {                                                                                         \
    const __m512 xv = _mm512_set1_ps(x##k[c]);                                              \
    for (int v = 0; v < NV; ++v) a##k[v] = _mm512_fmadd_ps(xv, wv[v], a##k[v]);             \
  }
    INFODROP_FMA(0) INFODROP_FMA(1) INFODROP_FMA(2) INFODROP_FMA(3)
    INFODROP_FMA(4) INFODROP_FMA(5) INFODROP_FMA(6) INFODROP_FMA(7)
#undef INFODROP_FMA
  }
#define INFODROP_STORE(k) for (int v = 0; v < NV; ++v) _mm512_store_ps(acc + (k * NV + v) * 16, a##k[v]);
  INFODROP_STORE(0) INFODROP_STORE(1) INFODROP_STORE(2) INFODROP_STORE(3)
  INFODROP_STORE(4) INFODROP_STORE(5) INFODROP_STORE(6) INFODROP_STORE(7)
#undef INFODROP_STORE
}

// One tile: pixels q0..q0+7 of output row p (those past the row computed on zeros and not stored), outputs
// o0..o0+16*NV-1. A pixel whose tap falls in the padding reads a row of zeros instead, so the loop over the input
// channels has no branches.
template <int NV>
void ForwardTile(const Shape& s, const float* x, const float* w, const float* zeros, float* y, int64_t p, int64_t q0,
                 int64_t o0, __mmask16 tail) {
  static_assert(kPixels == 8, "ChannelLoop holds 8 pixels");
  alignas(64) float acc[kPixels * kMaxVectors * 16] = {};
  const int64_t pixels = std::min<int64_t>(kPixels, s.q - q0);
  for (int64_t i = 0; i < s.kh; ++i) {
    const int64_t row = p * s.sh + i - s.pad_h;
    if (row < 0 || row >= s.h) continue;
    for (int64_t j = 0; j < s.kw; ++j) {
      const float* xp[kPixels];
      for (int k = 0; k < kPixels; ++k) {
        const int64_t col = (q0 + k) * s.sw + j - s.pad_w;
        xp[k] = k < pixels && col >= 0 && col < s.w ? x + (row * s.w + col) * s.c : zeros;
      }
      ChannelLoop<NV>(xp, w + (i * s.kw + j) * s.c * kBlock, s.c, kBlock, tail, acc);
    }
  }
  for (int k = 0; k < pixels; ++k)
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v == NV - 1 ? tail : static_cast<__mmask16>(0xFFFF);
      _mm512_mask_storeu_ps(y + ((p * s.q) + q0 + k) * s.o + o0 + 16 * v, m, _mm512_load_ps(acc + (k * NV + v) * 16));
    }
}

// Images [n0, n1): per output block, every row of the image, so that block's weights stay in cache. `packed`
// holds the weights block by block (PackWeights).
void ForwardImages(const Shape& s, const float* x, const float* packed, const float* zeros, float* y, int64_t n0,
                   int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const float* xn = x + n * s.h * s.w * s.c;
    float* yn = y + n * s.p * s.q * s.o;
    for (int64_t o0 = 0; o0 < s.o; o0 += kBlock) {
      const float* wb = packed + (o0 / kBlock) * s.kh * s.kw * s.c * kBlock;
      const int64_t block = std::min<int64_t>(kBlock, s.o - o0);
      const int vectors = static_cast<int>((block + 15) / 16);
      const __mmask16 tail = block % 16 ? static_cast<__mmask16>((1u << (block % 16)) - 1) : 0xFFFF;
      for (int64_t p = 0; p < s.p; ++p)
        for (int64_t q0 = 0; q0 < s.q; q0 += kPixels) {
          if (vectors == 3) ForwardTile<3>(s, xn, wb, zeros, yn, p, q0, o0, tail);
          else if (vectors == 2) ForwardTile<2>(s, xn, wb, zeros, yn, p, q0, o0, tail);
          else ForwardTile<1>(s, xn, wb, zeros, yn, p, q0, o0, tail);
        }
    }
  }
}

// The weights (KH, KW, C, O) as blocks of kBlock output channels, (O / kBlock, KH, KW, C, kBlock), the last block
// padded with zeros: a tile's weight loads then walk contiguous memory instead of rows O floats apart.
std::vector<float> PackWeights(const Shape& s, const float* w) {
  const int64_t blocks = (s.o + kBlock - 1) / kBlock, rows = s.kh * s.kw * s.c;
  std::vector<float> packed(blocks * rows * kBlock, 0.0f);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t width = std::min<int64_t>(kBlock, s.o - b * kBlock);
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(packed.data() + (b * rows + r) * kBlock, w + r * s.o + b * kBlock, sizeof(float) * width);
  }
  return packed;
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w) {
  const auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 4 || wd.size() != 4 || yd.size() != 4)
    return ffi::Error::InvalidArgument("forward: expected x (N,H,W,C), w (KH,KW,C,O), y (N,P,Q,O)");
  const Shape s{xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], yd[3], wd[0], wd[1], stride_h, stride_w, pad_h, pad_w};
  if (yd[0] != s.n || wd[2] != s.c || wd[3] != s.o || s.sh < 1 || s.sw < 1)
    return ffi::Error::InvalidArgument("forward: shapes do not match");
  const std::vector<float> zeros(s.c, 0.0f);
  const float* xs = x.typed_data();
  const std::vector<float> packed = PackWeights(s, w.typed_data());
  const float* ws = packed.data();
  float* out = y->typed_data();
  const int64_t parts = Parts(pool, s.n);
  ParallelParts(pool, parts, [&, s](int64_t part) {
    ForwardImages(s, xs, ws, zeros.data(), out, s.n * part / parts, s.n * (part + 1) / parts);
  });
  return ffi::Error::Success();
}

// Both handlers: the pool, two float32 operands, one float32 result, strides and the padding before.
auto Binding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<int64_t>("stride_h")
      .Attr<int64_t>("stride_w")
      .Attr<int64_t>("pad_h")
      .Attr<int64_t>("pad_w");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(infodrop_kernel_gradient, KernelGradient, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(infodrop_conv_forward, Forward, Binding());
