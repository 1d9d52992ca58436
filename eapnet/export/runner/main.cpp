// eapnet_runner: runs an EAPNet ExecuTorch program on one scene (three LDR frames + their exposures),
// whole-frame or tiled, writes the HDR and prints one JSON line of timings and peak memory.
//
// Exit status: 0 done; 2 a bad argument or input file (one line on stderr naming it and the problem);
// 1 the runtime failed (loading or running the program, writing an output).
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "image_io.h"
#include "png.h"
#include "program.h"
#include "tiler.h"

namespace {

using eapnet::InputError;

const char kUsage[] =
    "usage: eapnet_runner PROGRAM.pte (--frames S M L | --ldrs-f32 FILE --size HxW) --evs A B C [options]\n"
    "       eapnet_runner PROGRAM.pte --info\n"
    "\n"
    "Runs an EAPNet ExecuTorch program (float or app convention) on one scene: whole-frame when the frames\n"
    "have the program's size, tiled (tiles of the program's size, eapnet.inference.predict's blending) when\n"
    "they are larger. Prints one JSON line: program, io, frame, tiles, overlap, load_ms, first_ms,\n"
    "latency_ms, median_ms, peak_rss_mb, threads.\n"
    "\n"
    "inputs:\n"
    "  --frames S M L   short, medium, long frame: binary PPM (P6, maxval 255), 8-bit RGB PNG, or raw\n"
    "                   interleaved RGB bytes (needs --size)\n"
    "  --ldrs-f32 FILE  float programs: raw float32 (3, 3, H, W) = (frame, channel, row, col) in [0, 1]\n"
    "  --size HxW       frame size of raw inputs, pixels\n"
    "  --evs A B C      exposures in stops relative to the medium frame, strictly increasing\n"
    "options:\n"
    "  --overlap N      pixels shared by neighbouring tiles, in [0, min(tile side) / 2) (default 64)\n"
    "  --threads N      XNNPACK thread pool size (default: the runtime's, one per performance core)\n"
    "  --repeat N       runs (default 1); the first (warm-up) is first_ms, the others latency_ms\n"
    "  --out-f32 FILE   the HDR as raw float32 (H, W, 3), interleaved RGB\n"
    "  --out-png FILE   the HDR as the NTIRE 16-bit RGB PNG: round(hdr * align), align = 65535 / max(hdr)\n"
    "  --out-align FILE the align ratio (hdr = png / align) as a NumPy .npy 0-d float64\n"
    "  --overwrite      replace existing output files\n"
    "  --verbose        keep the runtime's info messages on stderr (default: errors only)\n"
    "  --info           print {\"program\": [H, W], \"io\": ...} and exit\n";

constexpr int kDefaultOverlap = 64;  // eapnet.inference.TILE_OVERLAP
constexpr double kEvSpan = 10.0;     // eapnet.data.ntire.EV_SPAN: most stops a frame may be from the medium one

struct Args {
  std::string program;
  std::vector<std::string> frames;  // S M L
  std::string ldrs_f32;
  int size_h = 0, size_w = 0;  // --size, 0 = not given
  std::vector<float> evs;
  std::string evs_text;  // as given, for messages
  int overlap = kDefaultOverlap;
  int threads = 0;  // 0 = the runtime's default
  int repeat = 1;
  std::string out_f32, out_png, out_align;
  bool overwrite = false;
  bool info = false;
  bool verbose = false;
};

// A bad argument: the message names it.
struct ArgError : InputError {
  using InputError::InputError;
};

long parse_int(const std::string& option, const std::string& text, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < lo || v > hi) {
    throw ArgError(option + " " + text + ": expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                   "]");
  }
  return v;
}

void parse_size(const std::string& text, int& h, int& w) {
  const size_t x = text.find('x');
  if (x == std::string::npos) throw ArgError("--size " + text + ": expected HxW in pixels, e.g. 1060x1900");
  h = static_cast<int>(parse_int("--size", text.substr(0, x), 1, eapnet::kMaxSide));
  w = static_cast<int>(parse_int("--size", text.substr(x + 1), 1, eapnet::kMaxSide));
}

Args parse_args(int argc, char** argv) {
  Args a;
  std::vector<std::string> rest(argv + 1, argv + argc);
  size_t i = 0;
  // The values of an option with n of them (taken as values even when they start with '-': EVs do).
  const auto values = [&](const std::string& option, size_t n) {
    if (i + n >= rest.size()) {
      throw ArgError(option + ": expects " + std::to_string(n) + " value" + (n > 1 ? "s" : ""));
    }
    std::vector<std::string> v(rest.begin() + i + 1, rest.begin() + i + 1 + n);
    i += n;
    return v;
  };
  for (; i < rest.size(); ++i) {
    const std::string& opt = rest[i];
    if (opt == "--frames") {
      a.frames = values(opt, 3);
    } else if (opt == "--ldrs-f32") {
      a.ldrs_f32 = values(opt, 1)[0];
    } else if (opt == "--size") {
      parse_size(values(opt, 1)[0], a.size_h, a.size_w);
    } else if (opt == "--evs") {
      a.evs.clear();
      a.evs_text = opt;
      for (const std::string& t : values(opt, 3)) {
        a.evs_text += " " + t;
        char* end = nullptr;
        const double v = std::strtod(t.c_str(), &end);
        if (t.empty() || *end != '\0' || !std::isfinite(v)) throw ArgError("--evs " + t + ": not a finite number");
        a.evs.push_back(static_cast<float>(v));
      }
    } else if (opt == "--overlap") {
      a.overlap = static_cast<int>(parse_int(opt, values(opt, 1)[0], 0, eapnet::kMaxSide));
    } else if (opt == "--threads") {
      a.threads = static_cast<int>(parse_int(opt, values(opt, 1)[0], 1, 256));
    } else if (opt == "--repeat") {
      a.repeat = static_cast<int>(parse_int(opt, values(opt, 1)[0], 1, 100000));
    } else if (opt == "--out-f32") {
      a.out_f32 = values(opt, 1)[0];
    } else if (opt == "--out-png") {
      a.out_png = values(opt, 1)[0];
    } else if (opt == "--out-align") {
      a.out_align = values(opt, 1)[0];
    } else if (opt == "--overwrite") {
      a.overwrite = true;
    } else if (opt == "--verbose") {
      a.verbose = true;
    } else if (opt == "--info") {
      a.info = true;
    } else if (opt.size() > 1 && opt[0] == '-') {
      throw ArgError(opt + ": unknown option (--help lists them)");
    } else if (a.program.empty()) {
      a.program = opt;
    } else {
      throw ArgError(opt + ": unexpected argument (the program is " + a.program + ")");
    }
  }
  if (a.program.empty()) throw ArgError("no program given (the first argument is the .pte file)");
  if (a.info) return a;
  if (a.frames.empty() == a.ldrs_f32.empty()) {
    throw ArgError("give the frames either as --frames S M L or as --ldrs-f32 FILE");
  }
  if (!a.ldrs_f32.empty() && a.size_h == 0) throw ArgError("--ldrs-f32 " + a.ldrs_f32 + ": needs --size HxW");
  if (a.evs.empty()) throw ArgError("--evs A B C is required (stops relative to the medium frame)");
  // As eapnet.data.ntire.check_exposures: an exposure bracket, within EV_SPAN stops of the medium frame.
  if (!(a.evs[0] < a.evs[1] && a.evs[1] < a.evs[2])) {
    throw ArgError(a.evs_text + ": not strictly increasing short < medium < long (an exposure bracket needs three "
                   "different exposures)");
  }
  if (std::max(a.evs[1] - a.evs[0], a.evs[2] - a.evs[1]) > kEvSpan) {
    throw ArgError(a.evs_text + ": a frame is more than " + std::to_string(int(kEvSpan)) +
                   " stops from the medium one");
  }
  // Outputs: distinct, in an existing folder, not replacing a file without --overwrite.
  std::vector<std::string> outs;
  for (const auto& [option, path] : {std::pair<const char*, std::string>{"--out-f32", a.out_f32},
                                     {"--out-png", a.out_png},
                                     {"--out-align", a.out_align}}) {
    if (path.empty()) continue;
    if (std::find(outs.begin(), outs.end(), path) != outs.end()) {
      throw ArgError(std::string(option) + " " + path + ": named twice");
    }
    outs.push_back(path);
    struct stat st {};
    if (stat(path.c_str(), &st) == 0 && !a.overwrite) {
      throw ArgError(path + ": the output exists (pass --overwrite to replace it)");
    }
    const size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || access(dir.c_str(), W_OK) != 0) {
      throw ArgError(path + ": its folder " + dir + " does not exist or is not writable");
    }
  }
  return a;
}

// The scene's frames as read: 8-bit frames (3 x H x W x 3 codes) or float32 ldrs (3 x 3 x H x W).
struct Scene {
  int h = 0, w = 0;
  std::vector<uint8_t> codes;  // --frames: frame, row, col, channel
  std::vector<float> ldrs;     // --ldrs-f32: frame, channel, row, col
};

Scene read_scene(const Args& a) {
  Scene s;
  if (!a.ldrs_f32.empty()) {
    s.h = a.size_h;
    s.w = a.size_w;
    s.ldrs = eapnet::read_f32(a.ldrs_f32, size_t(9) * s.h * s.w);
    // As eapnet.inference.check_scene: finite, in [0, 1] up to rounding.
    for (float v : s.ldrs) {
      if (!std::isfinite(v) || v < -1e-3f || v > 1.0f + 1e-3f) {
        throw InputError(a.ldrs_f32 + ": holds " + (std::isfinite(v) ? "values outside [0, 1]" : "NaN/inf") +
                         " (e.g. " + std::to_string(v) + "); the frames must be floats in [0, 1]");
      }
    }
    return s;
  }
  const char* names[3] = {"short", "medium", "long"};
  for (int f = 0; f < 3; ++f) {
    eapnet::Frame8 frame = eapnet::read_frame(a.frames[f], a.size_h, a.size_w);
    if (a.size_h != 0 && (frame.h != a.size_h || frame.w != a.size_w)) {
      throw InputError(a.frames[f] + ": the " + names[f] + " frame is " + std::to_string(frame.h) + "x" +
                       std::to_string(frame.w) + " (HxW), --size says " + std::to_string(a.size_h) + "x" +
                       std::to_string(a.size_w));
    }
    if (f == 0) {
      s.h = frame.h;
      s.w = frame.w;
      s.codes.reserve(size_t(3) * s.h * s.w * 3);
    } else if (frame.h != s.h || frame.w != s.w) {
      throw InputError(a.frames[f] + ": the " + names[f] + " frame is " + std::to_string(frame.h) + "x" +
                       std::to_string(frame.w) + " (HxW), the short frame " + a.frames[0] + " is " +
                       std::to_string(s.h) + "x" + std::to_string(s.w));
    }
    s.codes.insert(s.codes.end(), frame.rgb.begin(), frame.rgb.end());
  }
  return s;
}

// Copies the tile at (top, left) of the scene into the program's input buffer, in the program's
// convention. 8-bit codes for a float program become code * (1 / 255) in float32, as AppIO computes.
void cut_tile(const Scene& s, int top, int left, eapnet::HdrProgram& p) {
  const size_t H = s.h, W = s.w, th = p.height(), tw = p.width();
  if (p.io() == eapnet::ProgramIO::App) {  // (3, th, tw, 3) codes: whole rows of each frame
    uint8_t* dst = p.frames();
    for (size_t f = 0; f < 3; ++f) {
      for (size_t y = 0; y < th; ++y) {
        const uint8_t* src = &s.codes[((f * H + top + y) * W + left) * 3];
        std::memcpy(dst + (f * th + y) * tw * 3, src, tw * 3);
      }
    }
    return;
  }
  float* dst = p.ldrs();  // (3, 3, th, tw)
  const float scale = static_cast<float>(1.0 / 255.0);  // torch: float32 tensor * Python float 1/255
  for (size_t f = 0; f < 3; ++f) {
    for (size_t c = 0; c < 3; ++c) {
      for (size_t y = 0; y < th; ++y) {
        float* row = dst + ((f * 3 + c) * th + y) * tw;
        if (!s.ldrs.empty()) {
          std::memcpy(row, &s.ldrs[((f * 3 + c) * H + top + y) * W + left], tw * sizeof(float));
        } else {
          const uint8_t* src = &s.codes[((f * H + top + y) * W + left) * 3 + c];
          for (size_t x = 0; x < tw; ++x) row[x] = static_cast<float>(src[x * 3]) * scale;
        }
      }
    }
  }
}

// Peak resident memory of this program, MiB: VmHWM of /proc/self/status, the high-water mark of this
// process image. getrusage's ru_maxrss is the fallback only: Linux carries it across exec, so a runner
// started by a large parent (a Python test) would report the parent's footprint.
double peak_rss_mb() {
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    long kb = -1;
    while (std::fgets(line, sizeof line, f)) {
      if (std::sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    }
    std::fclose(f);
    if (kb >= 0) return kb / 1024.0;
  }
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);  // ru_maxrss: kilobytes on Linux
  return usage.ru_maxrss / 1024.0;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string json_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

int run(const Args& a) {
  if (a.info) {
    eapnet::HdrProgram program(a.program);
    std::printf("{\"program\": [%d, %d], \"io\": \"%s\"}\n", program.height(), program.width(),
                program.io() == eapnet::ProgramIO::App ? "app" : "float");
    return 0;
  }
  const Scene scene = read_scene(a);
  // The thread pool is sized before the program loads: XNNPACK keeps the pool it was created with.
  if (a.threads > 0) eapnet::set_threads(a.threads);

  const auto t_load = std::chrono::steady_clock::now();
  eapnet::HdrProgram program(a.program);
  const double load_ms = ms_since(t_load);
  if (program.io() == eapnet::ProgramIO::App && scene.codes.empty()) {
    throw ArgError("--ldrs-f32 " + a.ldrs_f32 + ": the program takes 8-bit frames (app convention); pass --frames");
  }
  eapnet::TilePlan plan;
  try {
    plan = eapnet::plan_tiles(scene.h, scene.w, program.height(), program.width(), a.overlap);
  } catch (const std::invalid_argument& e) {
    throw ArgError(a.program + ": " + e.what());
  }
  std::copy(a.evs.begin(), a.evs.end(), program.evs());

  const auto run_tile = [&](int top, int left, float* hdr) {
    cut_tile(scene, top, left, program);
    program.run(hdr);
  };
  std::vector<float> hdr;
  std::vector<double> latency_ms;
  double first_ms = 0;
  for (int r = 0; r < a.repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    if (plan.count() == 1) {  // the frame is the program's size: one run, no blending (as predict)
      hdr.resize(size_t(scene.h) * scene.w * 3);
      run_tile(0, 0, hdr.data());
    } else {
      hdr = eapnet::run_tiled(plan, run_tile);
    }
    const double ms = ms_since(t0);
    if (r == 0) {
      first_ms = ms;
    } else {
      latency_ms.push_back(ms);
    }
  }

  if (!a.out_f32.empty()) eapnet::write_atomic(a.out_f32, eapnet::f32_bytes(hdr));
  if (!a.out_png.empty() || !a.out_align.empty()) {
    const eapnet::Hdr16 q = eapnet::quantize_hdr16(hdr);
    if (!a.out_png.empty()) eapnet::write_atomic(a.out_png, eapnet::encode_png_rgb16(q.png.data(), scene.h, scene.w));
    if (!a.out_align.empty()) eapnet::write_atomic(a.out_align, eapnet::npy_scalar_f64(q.align));
  }

  std::string latencies;
  for (double ms : latency_ms) latencies += (latencies.empty() ? "" : ", ") + json_number(ms);
  std::string median = "null";  // of the runs after the warm-up
  if (!latency_ms.empty()) {
    std::vector<double> sorted = latency_ms;
    std::sort(sorted.begin(), sorted.end());
    const size_t n = sorted.size();
    median = json_number(n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]));
  }
  std::printf(
      "{\"program\": [%d, %d], \"io\": \"%s\", \"frame\": [%d, %d], \"tiles\": %d, \"overlap\": %d, "
      "\"load_ms\": %s, \"first_ms\": %s, \"latency_ms\": [%s], \"median_ms\": %s, \"peak_rss_mb\": %.1f, "
      "\"threads\": %d}\n",
      program.height(), program.width(), program.io() == eapnet::ProgramIO::App ? "app" : "float", scene.h, scene.w,
      plan.count(), a.overlap, json_number(load_ms).c_str(), json_number(first_ms).c_str(), latencies.c_str(),
      median.c_str(), peak_rss_mb(), eapnet::thread_count());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int k = 1; k < argc; ++k) {
    if (std::strcmp(argv[k], "--help") == 0 || std::strcmp(argv[k], "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  try {
    const Args args = parse_args(argc, argv);
    eapnet::route_runtime_log(args.verbose);
    return run(args);
  } catch (const InputError& e) {  // bad arguments and input files
    std::fprintf(stderr, "eapnet_runner: error: %s\n", e.what());
    return 2;
  } catch (const std::invalid_argument& e) {  // a file that is not an EAPNet program
    std::fprintf(stderr, "eapnet_runner: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {  // the runtime failed
    std::fprintf(stderr, "eapnet_runner: failed: %s\n", e.what());
    return 1;
  }
}
