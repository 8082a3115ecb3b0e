// A 2-D convolution's weight gradient for XLA:CPU, as an XLA FFI custom call.
//
//   dW[i, j, c, o] = sum over n, h, w of x[n, sh*h + i - pt, sw*w + j - pl, c] * dy[n, h, w, o]
//
// x is (N, H, W, C) and dy (N, Ho, Wo, O), both row-major as the forward pass left them; dW is
// (KH, KW, C, O), flax's HWIO. Positions outside x are the forward pass's zero padding.
//
// Why: XLA:CPU computes this contraction through Eigen's spatial convolution, which needs x with
// the batch axis innermost (a transpose of x) and then runs well below the speed Eigen reaches on
// the forward convolution. Read in place, x and dy need no transpose: for one tap (i, j), a block
// of R input channels and one of 64 output channels, the R x 64 outputs stay in registers while
// the loop walks over positions; each position adds an outer product of R values of x
// (broadcast) and 64 values of dy (vectors). Positions are taken in chunks of a few hundred, so
// the dy and x rows of a chunk stay in cache while every tap and channel block passes over them.
// Timings per ResNet-18 CIFAR layer: benchmarks/weight_grad_kernel.py and docs/performance.md.
//
// Threads: positions are cut into a number of partitions fixed by the shape, each summed in order
// into its own buffer; the buffers are added in partition order. The result therefore does not
// depend on how many threads ran or which took which partition: it is deterministic (bitwise
// reproducible). With more threads than partitions, dW's columns are split between them too
// (`Work`). The caller and the thread pool's workers take work from one counter, so the caller
// never waits for a worker that has not started (the pool may be busy with XLA's own work).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Output channels per block: the columns of dy that one pass over the positions keeps in registers.
constexpr int kOutputBlock = 64;
#ifdef __AVX512F__
constexpr int kVectorValues = 16;  // zmm
constexpr int kChannelBlock = 6;   // 6 x 4 accumulators + 4 dy vectors + 1 broadcast: 29 of 32 zmm
#else
constexpr int kVectorValues = 8;   // ymm (AVX2; other instruction sets split it as they must)
constexpr int kChannelBlock = 1;   // 1 x 8 accumulators + 1 broadcast of 16 ymm; dy is read by the
                                   // FMAs from memory
#endif
constexpr int kVectorsPerBlock = kOutputBlock / kVectorValues;
typedef float Vector __attribute__((vector_size(kVectorValues * sizeof(float))));

// Positions per chunk: 256 is the fastest, or within 5 % of it, at every ResNet-18 CIFAR stage
// from 32 px x 64 channels to 4 px x 512 (chunks of 64 to 4096 positions, two threads).
constexpr int kChunkPositions = 256;
// Partitions: up to 8, with at least 4096 positions each (but at least two partitions), because
// adding up the partitions' sums costs a pass over dW each: with 8 partitions of a 4 px x 512
// channel layer (batch 64) that would take longer than the sums themselves. (Splitting such
// layers by blocks of output channels instead, with no sums to add, is slower at 16 and 8 px:
// each block re-reads all of x.)
constexpr int64_t kMaxPartitions = 8;
constexpr int64_t kMinPartitionPositions = 4096;

inline Vector Load(const float* p) { Vector v; std::memcpy(&v, p, sizeof v); return v; }
// All lanes one value, read from memory: compiles to a broadcast load. (`Vector{} + f` would add
// 0.0 first, -0.0 + 0.0 being +0.0, and broadcast from a register on the FMA units' port.)
// (A loop assigning lane by lane compiles to masked broadcasts through the stack.)
template <size_t... Lane>
inline Vector Splat(float f, std::index_sequence<Lane...>) { return Vector{((void)Lane, f)...}; }
inline Vector Broadcast(const float* p) {
  return Splat(*p, std::make_index_sequence<kVectorValues>{});
}
inline void Store(float* p, Vector v) { std::memcpy(p, &v, sizeof v); }

// Rounding towards minus infinity (C++ division truncates towards zero), for positive d.
inline int64_t FloorDiv(int64_t a, int64_t d) { return a >= 0 ? a / d : -((-a + d - 1) / d); }

struct Geometry {
  int64_t n, h, w, c;            // x
  int64_t ho, wo, o;             // dy
  int64_t kh, kw;                // window
  int64_t sh, sw, pt, pl;        // strides, top and left padding
};

// Adds to out[i, j, c0 : c0 + R, o0 : o0 + 64] the products over rows [row0, row1) of (n, h).
template <int R>
void AccumulateBlock(const Geometry& g, const float* x, const float* dy, float* out,
                     int64_t row0, int64_t row1, int64_t i, int64_t j, int64_t c0, int64_t o0) {
  Vector acc[R][kVectorsPerBlock];
  float* block = out + ((i * g.kw + j) * g.c + c0) * g.o + o0;
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVectorsPerBlock; ++v) {
      acc[r][v] = Load(block + r * g.o + v * kVectorValues);
    }
  // Output columns w whose input column sw*w + j - pl lies inside x, 0 <= sw*w + j - pl < W.
  const int64_t w_begin = std::max<int64_t>(0, -FloorDiv(j - g.pl, g.sw));
  const int64_t w_end = std::min<int64_t>(g.wo, FloorDiv(g.w - 1 - j + g.pl, g.sw) + 1);
  // Rows are (image, output row) pairs, counted without a division per row (small images have
  // few columns per row).
  int64_t image = row0 / g.ho, out_row = row0 % g.ho;
  for (int64_t row = row0; row < row1; ++row, ++out_row) {
    if (out_row == g.ho) {
      out_row = 0;
      ++image;
    }
    const int64_t in_row = g.sh * out_row + i - g.pt;
    if (in_row < 0 || in_row >= g.h) continue;
    const float* dy_row = dy + row * g.wo * g.o + o0;
    const float* x_row = x + (image * g.h + in_row) * g.w * g.c + c0;
    for (int64_t col = w_begin; col < w_end; ++col) {
      const float* d = dy_row + col * g.o;
      Vector dv[kVectorsPerBlock];
      for (int v = 0; v < kVectorsPerBlock; ++v) dv[v] = Load(d + v * kVectorValues);
      const float* xv = x_row + (g.sw * col + j - g.pl) * g.c;
      for (int r = 0; r < R; ++r) {
        const Vector b = Broadcast(xv + r);
        for (int v = 0; v < kVectorsPerBlock; ++v) acc[r][v] += b * dv[v];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVectorsPerBlock; ++v) {
      Store(block + r * g.o + v * kVectorValues, acc[r][v]);
    }
}

template <int R>
void AccumulateRemainder(const Geometry& g, const float* x, const float* dy, float* out,
                         int64_t row0, int64_t row1, int64_t i, int64_t j, int64_t c0, int64_t o0,
                         int64_t channels) {
  if constexpr (R > 0) {
    if (channels == R) return AccumulateBlock<R>(g, x, dy, out, row0, row1, i, j, c0, o0);
    AccumulateRemainder<R - 1>(g, x, dy, out, row0, row1, i, j, c0, o0, channels);
  }
}

// Sums rows [row0, row1) into out[:, :, :, o_begin : o_end] (zeroed by the caller).
void AccumulateRows(const Geometry& g, const float* x, const float* dy, float* out,
                    int64_t row0, int64_t row1, int64_t o_begin, int64_t o_end) {
  const int64_t chunk_rows = std::max<int64_t>(1, kChunkPositions / g.wo);
  for (int64_t chunk = row0; chunk < row1; chunk += chunk_rows) {
    const int64_t chunk_end = std::min(row1, chunk + chunk_rows);
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j)
        for (int64_t c0 = 0; c0 < g.c; c0 += kChannelBlock)
          for (int64_t o0 = o_begin; o0 < o_end; o0 += kOutputBlock) {
            const int64_t channels = std::min<int64_t>(kChannelBlock, g.c - c0);
            if (channels == kChannelBlock) {
              AccumulateBlock<kChannelBlock>(g, x, dy, out, chunk, chunk_end, i, j, c0, o0);
            } else {
              AccumulateRemainder<kChannelBlock - 1>(g, x, dy, out, chunk, chunk_end, i, j, c0,
                                                     o0, channels);
            }
          }
  }
}

// An item of work is one partition of the positions (rows of (n, h)) for one group of output
// channel blocks. The partitions are fixed by the shape: they decide the order of every sum.
// The groups only divide dW's columns between threads, which changes no sum, so their number
// follows the thread count: more threads than partitions (small images on many cores) still
// find work.
struct Work {
  Geometry g;
  const float* x;
  const float* dy;
  std::vector<float*> sums;        // one per partition
  int64_t rows, partitions, groups, blocks_per_group;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};

  int64_t items() const { return partitions * groups; }

  // Takes items until none is left. Touches x, dy and sums only for an item it took, which the
  // caller waits for; a worker that starts after the last one was taken returns.
  void Run() {
    for (int64_t item = next.fetch_add(1); item < items(); item = next.fetch_add(1)) {
      const int64_t p = item / groups, q = item % groups;
      AccumulateRows(g, x, dy, sums[p], rows * p / partitions, rows * (p + 1) / partitions,
                     std::min(g.o, q * blocks_per_group * kOutputBlock),
                     std::min(g.o, (q + 1) * blocks_per_group * kOutputBlock));
      finished.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error ConvWeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::ResultBuffer<ffi::F32> dw, int64_t stride_h, int64_t stride_w,
                          int64_t pad_top, int64_t pad_left) {
  const auto xd = x.dimensions(), dyd = dy.dimensions(), dwd = dw->dimensions();
  if (xd.size() != 4 || dyd.size() != 4 || dwd.size() != 4) {
    return ffi::Error::InvalidArgument("conv weight grad: x, dy and dW must have rank 4");
  }
  Geometry g{xd[0], xd[1], xd[2], xd[3], dyd[1], dyd[2], dyd[3], dwd[0], dwd[1],
             stride_h, stride_w, pad_top, pad_left};
  if (dyd[0] != g.n || dwd[2] != g.c || dwd[3] != g.o || g.o % kOutputBlock != 0 ||
      g.sh < 1 || g.sw < 1) {
    return ffi::Error::InvalidArgument(
        "conv weight grad: needs x (N,H,W,C), dy (N,Ho,Wo,O), dW (KH,KW,C,O) with O a multiple "
        "of 64 and positive strides");
  }
  const size_t values = static_cast<size_t>(g.kh * g.kw * g.c * g.o);
  float* result = dw->typed_data();
  std::fill(result, result + values, 0.0f);
  if (g.n * g.ho * g.wo == 0) return ffi::Error::Success();   // no positions: dW is zero
  auto work = std::make_shared<Work>();
  work->g = g;
  work->x = x.typed_data();
  work->dy = dy.typed_data();
  work->rows = g.n * g.ho;
  const int64_t positions = work->rows * g.wo;
  work->partitions = std::min({kMaxPartitions, work->rows,
                               std::max<int64_t>(2, positions / kMinPartitionPositions)});
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t blocks = g.o / kOutputBlock;
  work->groups = std::min(blocks, (threads + work->partitions - 1) / work->partitions);
  work->blocks_per_group = (blocks + work->groups - 1) / work->groups;
  std::vector<float> partial(values * (work->partitions - 1), 0.0f);
  work->sums.push_back(result);
  for (int64_t p = 1; p < work->partitions; ++p) work->sums.push_back(&partial[values * (p - 1)]);

  const int64_t helpers = std::min(threads, work->items()) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work] { work->Run(); });
  work->Run();
  while (work->finished.load(std::memory_order_acquire) < work->items()) {
    std::this_thread::yield();
  }
  for (int64_t p = 1; p < work->partitions; ++p) {
    const float* s = work->sums[p];
    for (size_t k = 0; k < values; ++k) result[k] += s[k];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SslJaxConvWeightGrad, ConvWeightGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));
