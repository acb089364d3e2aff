// Harm detectors: the named signals that say a tenant suffers, registered in
// one place (docs/policy.md, "Harm detectors"). Each judges one signal of a
// tenant's interval against that tenant's own baseline and a floor; the
// policy file names them (`fairness.harm.disabled_detectors`), case evidence
// quotes their labels and `fairwatch policy show` lists them.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "fairwatch/v1/operator.pb.h"
#include "fairwatch/v1/types.pb.h"

namespace fairwatch::controller {

// Resources whose harm is judged from the same detectors (bits: a detector
// may judge several).
enum class HarmGroup : uint8_t { kCpu = 1, kDisk = 2, kNetRx = 4, kNetTx = 8 };
std::optional<HarmGroup> HarmGroupOf(v1::Resource resource);

inline constexpr size_t kHarmDetectorCount = 6;

// When a tenant's own signal counts as harm.
struct HarmParams {
  // A signal is harm when above `ratio` x the tenant's baseline and above its floor.
  double ratio = 2.0;
  double runq_p99_floor_ns = 1e6;
  double psi_floor = 0.05;  // share of wall time stalled
  double io_latency_p99_floor_ns = 5e6;
  double drops_floor_per_s = 1.0;
  double retransmits_floor_per_s = 5.0;
  // CPU pressure of a tenant throttled by its own quota for more than this
  // share of the interval is self-inflicted, not harm.
  double self_throttled_fraction = 0.10;
  // Weight of a quiet interval in the baseline (exponential moving average).
  double baseline_alpha = 0.05;
  // By detector index (HarmDetectors()): false turns that detector off.
  std::array<bool, kHarmDetectorCount> enabled = {true, true, true, true, true, true};
};

struct HarmDetector {
  absl::string_view name;   // in the policy file: "runq_wait_p99"
  absl::string_view label;  // in evidence: "run-queue wait p99"
  absl::string_view help;   // one line for docs and --help
  uint8_t groups;           // HarmGroup bits it judges
  double (*value)(const v1::HarmSignals&);
  // Whether the agent read the signal over the interval (PSI needs a kernel
  // with it enabled, run-queue waits an interval the programs traced);
  // nullptr: always. An absent signal neither judges nor teaches a baseline.
  bool (*present)(const v1::HarmSignals&);
  double (*floor)(const HarmParams&);
  std::string (*format)(double);
};

// Whether `detector` judges harm on resources of `group`.
inline bool Judges(const HarmDetector& detector, HarmGroup group) {
  return (detector.groups & static_cast<uint8_t>(group)) != 0;
}

// Every detector, in a fixed order (the index is what HarmParams::enabled
// and baselines use).
const std::array<HarmDetector, kHarmDetectorCount>& HarmDetectors();
// The index of the detector called `name`, if any.
std::optional<size_t> FindHarmDetector(absl::string_view name);
// "runq_wait_p99, cpu_psi, ...": for error messages.
std::string HarmDetectorNames();

}  // namespace fairwatch::controller
