// Tiled inference for a fixed-size HDR program: the part of the runner an app copies.
//
// A program exported at a fixed size (tile_h x tile_w pixels) runs a larger frame as overlapping tiles of
// exactly that size, blended with linear ramps. This is the same algorithm, in the same float32 arithmetic
// and the same order, as the Python side (eapnet/inference.py: _starts, _ramp, _tiled), so the stitched
// HDR equals Python's stitched HDR of the same program bit for bit (given the same per-tile outputs).
//
// No dependency beyond the C++17 standard library: the program is reached through a callback.
// Compile with -ffp-contract=off (no fused multiply-adds) or the blend is no longer bit-exact.
#pragma once

#include <functional>
#include <stdexcept>
#include <vector>

namespace eapnet {

// Top (or left) pixel offsets of the tiles along one side of n pixels: every tile_side apart minus overlap,
// the last one flush with the far edge, ascending and without repeats. {0} when tile >= n.
std::vector<int> tile_starts(int n, int tile, int overlap);

// 1-D blending weights of one tile of n pixels (n values, float32). At an edge shared with a neighbour
// (not first / not last): zero over the outer quarter of the overlap (pixels whose receptive field leaves
// the tile), then a linear ramp (i + 0.5) / r over its middle half; 1 elsewhere and at image borders.
std::vector<float> tile_ramp(int n, int overlap, bool first, bool last);

// The tiles a frame needs: their starts along each side and the tile size (clamped to the frame).
struct TilePlan {
  int frame_h = 0, frame_w = 0;  // frame size, pixels
  int tile_h = 0, tile_w = 0;    // tile size, pixels (the program's fixed size)
  int overlap = 0;               // pixels shared by neighbouring tiles
  std::vector<int> ys, xs;       // tile tops / lefts, pixels
  int count() const { return static_cast<int>(ys.size() * xs.size()); }
};

// The plan for a frame_h x frame_w frame and tile_h x tile_w tiles. Throws std::invalid_argument (message
// names the sizes) when the frame is smaller than a tile on a side, or, when more than one tile is needed,
// when overlap is not in [0, min(tile_h, tile_w) / 2) (integer division, as Python's predict).
TilePlan plan_tiles(int frame_h, int frame_w, int tile_h, int tile_w, int overlap);

// Runs one tile: fills `hdr` (tile_h * tile_w * 3 floats, interleaved RGB rows, the HDR of the tile whose
// top-left pixel is (top, left)). It may throw; the exception leaves run_tiled unchanged.
using TileFn = std::function<void(int top, int left, float* hdr)>;

// The stitched HDR of the frame: frame_h * frame_w * 3 floats, interleaved RGB rows. Tiles run in Python's
// order (rows outer, columns inner); each adds hdr * w into the sum and w into the per-pixel norm, with
// w = wy[y] * wx[x]; the result is sum / norm, all float32.
std::vector<float> run_tiled(const TilePlan& plan, const TileFn& run_tile);

}  // namespace eapnet
