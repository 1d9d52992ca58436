// Tiled inference: see tiler.h. Mirrors eapnet/inference.py (_starts, _ramp, _tiled) line by line.
#include "tiler.h"

#include <algorithm>
#include <cstddef>
#include <string>

namespace eapnet {

std::vector<int> tile_starts(int n, int tile, int overlap) {
  if (tile >= n) return {0};
  // Python: sorted(set(range(0, n - tile, step)) | {n - tile}). The range stays below n - tile and
  // step = tile - overlap > 0, so the values are already ascending and distinct.
  const int step = tile - overlap;
  std::vector<int> starts;
  for (int s = 0; s < n - tile; s += step) starts.push_back(s);
  starts.push_back(n - tile);
  return starts;
}

std::vector<float> tile_ramp(int n, int overlap, bool first, bool last) {
  std::vector<float> w(static_cast<size_t>(n), 1.0f);
  const int o = std::min(overlap, n / 2);  // overlap actually shared on this side
  const int m = o / 4;                      // zero-weight margin, pixels
  const int r = o - 2 * m;                  // ramp length, pixels (>= 1 when o >= 1)
  if (o > 0) {
    // edge = [0] * m + [(i + 0.5) / r for i in range(r)], each value rounded to float32 as torch does.
    std::vector<float> edge(static_cast<size_t>(m + r), 0.0f);
    for (int i = 0; i < r; ++i) edge[m + i] = (static_cast<float>(i) + 0.5f) / static_cast<float>(r);
    if (!first) std::copy(edge.begin(), edge.end(), w.begin());
    if (!last) std::copy(edge.rbegin(), edge.rend(), w.end() - (m + r));  // the edge flipped
  }
  return w;
}

TilePlan plan_tiles(int frame_h, int frame_w, int tile_h, int tile_w, int overlap) {
  const auto size = [](int h, int w) { return std::to_string(h) + "x" + std::to_string(w); };
  if (frame_h < tile_h || frame_w < tile_w) {
    throw std::invalid_argument("the frame (" + size(frame_h, frame_w) + ", HxW) is smaller than the program's " +
                                size(tile_h, tile_w) + " on a side; tiles cannot be smaller than the program");
  }
  const bool whole = frame_h == tile_h && frame_w == tile_w;
  const int limit = std::min(tile_h, tile_w) / 2;
  if (!whole && !(overlap >= 0 && overlap < limit)) {
    throw std::invalid_argument("overlap " + std::to_string(overlap) + " is outside [0, " + std::to_string(limit) +
                                ") for " + size(tile_h, tile_w) + " tiles (it must be under half a tile side)");
  }
  TilePlan plan;
  plan.frame_h = frame_h;
  plan.frame_w = frame_w;
  plan.tile_h = tile_h;
  plan.tile_w = tile_w;
  plan.overlap = overlap;
  plan.ys = tile_starts(frame_h, tile_h, overlap);
  plan.xs = tile_starts(frame_w, tile_w, overlap);
  return plan;
}

std::vector<float> run_tiled(const TilePlan& plan, const TileFn& run_tile) {
  const size_t H = plan.frame_h, W = plan.frame_w, th = plan.tile_h, tw = plan.tile_w;
  std::vector<float> out(H * W * 3, 0.0f);   // sum of weighted tile outputs
  std::vector<float> norm(H * W, 0.0f);      // sum of weights, per pixel
  std::vector<float> tile(th * tw * 3);      // one tile's HDR
  const size_t rows = plan.ys.size(), cols = plan.xs.size();
  for (size_t i = 0; i < rows; ++i) {
    const std::vector<float> wy = tile_ramp(plan.tile_h, plan.overlap, i == 0, i == rows - 1);
    for (size_t j = 0; j < cols; ++j) {
      const std::vector<float> wx = tile_ramp(plan.tile_w, plan.overlap, j == 0, j == cols - 1);
      const size_t top = plan.ys[i], left = plan.xs[j];
      run_tile(plan.ys[i], plan.xs[j], tile.data());
      for (size_t y = 0; y < th; ++y) {
        for (size_t x = 0; x < tw; ++x) {
          const float w = wy[y] * wx[x];  // torch: wy[:, None] * wx[None, :]
          const size_t p = (top + y) * W + (left + x);
          const float* t = &tile[(y * tw + x) * 3];
          for (size_t c = 0; c < 3; ++c) out[p * 3 + c] += t[c] * w;  // product rounded, then added
          norm[p] += w;
        }
      }
    }
  }
  for (size_t p = 0; p < H * W; ++p) {
    for (size_t c = 0; c < 3; ++c) out[p * 3 + c] /= norm[p];
  }
  return out;
}

}  // namespace eapnet
