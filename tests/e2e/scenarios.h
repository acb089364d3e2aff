// The scenarios the harness runs: each drives real tenants on a timeline
// against a real controller and agent and judges the outcome through the
// operator CLI and the kernel (docs/scenarios.md).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tests/e2e/harness.h"

namespace fairwatch::testing::e2e {

struct ScenarioContext {
  Binaries binaries;
  const Narrator* narrator = nullptr;
  std::string dir;  // fresh for this run; removed afterwards
  TenantMounts mounts;
  // Appended to every controller's `fairness { }` (--fairness): a policy to try.
  std::string fairness;
  // tests/vm/fw-test-vms.sh, for the scenarios with libvirt guests.
  std::string vm_script;
};

struct Scenario {
  std::string name;
  std::string summary;  // one line: what it shows
  // Tools it runs besides the fairwatch binaries; missing ones skip it.
  std::vector<std::string> needs;
  std::function<void(ScenarioContext&, Outcome&)> run;
};

const std::vector<Scenario>& AllScenarios();

}  // namespace fairwatch::testing::e2e
