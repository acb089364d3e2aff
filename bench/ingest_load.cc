// ingest_load: the controller ingest benchmark (DESIGN.md target: 10,000
// hosts x 100 tenants at 1 Hz, >= 1,000,000 tenant-samples/s on 2 cores).
//
// Simulates H agents, each one AgentLink stream (Hello, full inventory, then
// a UsageReport every interval, LimitAcks for LimitCommands), multiplexed
// over a few gRPC channels. Reports carry what a real agent sends: cumulative
// CPU, run-queue (sum and log2 histogram), PSI, disk (bytes, ops, latency
// histogram) and network counters per tenant, host totals and the agent's own
// counters. They are encoded straight to protobuf wire bytes (checked against
// libprotobuf at start-up) so the generator costs the shared CPUs little.
//
// By default the controller runs in this process (ControllerServer with a
// SQLite store in a temp dir, so the judge runs every second) and the
// generator in a forked child: the controller's CPU, RSS and counters are
// then its own. With --controller the generator connects to a running
// fairwatch-controller; give --controller-pid for its CPU and RSS.
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cinttypes>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/histogram.h"
#include "common/log.h"
#include "controller/config.h"
#include "controller/engine.h"
#include "controller/planner.h"
#include "controller/server.h"
#include "controller/store.h"
#include "fairwatch/v1/agent.pb.h"
#include "google/protobuf/arena.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/support/client_callback.h"

namespace fairwatch::bench {
namespace {

constexpr char kConnectMethod[] = "/fairwatch.v1.AgentLink/Connect";
constexpr int kRunqBuckets = 34;  // what the agent sends: 8 empty + 26 measured
constexpr int kDiskBuckets = 34;  // 10 empty + 24 measured
constexpr uint32_t kHostCpus = 64;
constexpr size_t kLagBuckets = 64;

struct Options {
  std::string controller;  // empty: in-process controller
  int controller_pid = 0;
  uint32_t hosts = 100;
  uint32_t tenants = 100;
  uint32_t seconds = 30;
  uint32_t warmup = 10;
  uint32_t interval_ms = 1000;
  uint32_t channels = 16;
  uint32_t sender_threads = 1;
  uint32_t connect_window = 500;
  double hog_percent = 1.0;
  bool judge = true;
  bool stages = false;
  bool deadlock_detection = true;
  bool sink = false;
  uint64_t min_available_mb = 2048;
  std::string log_level = "warning";
};

// --- workload ---------------------------------------------------------------

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
double Unit(uint64_t x) { return static_cast<double>(Mix(x) >> 11) * 0x1.0p-53; }
uint64_t Key(uint32_t host, uint32_t tenant, uint64_t salt) {
  return (static_cast<uint64_t>(host) << 32 | tenant) * 0x100000001b3ULL + salt;
}

bool IsHogHost(uint32_t host, double hog_percent) {
  return Unit(Key(host, 0xffffffff, 7)) * 100 < hog_percent;
}

// What a tenant does each second: rates and histogram shapes.
struct Profile {
  double cpu_cores = 0;
  double runq_waits_per_s = 0;
  int runq_center = 12;  // log2 ns of its typical wait
  double read_bytes_per_s = 0, write_bytes_per_s = 0;
  double read_ops_per_s = 0, write_ops_per_s = 0;
  int disk_center = 18;
  double rx_bytes_per_s = 0, tx_bytes_per_s = 0;
  double drops_per_s = 0;
  double cpu_psi = 0, io_psi = 0;  // share of wall time stalled
};

Profile MakeProfile(uint32_t host, uint32_t tenant, bool hog_host) {
  Profile p;
  const double u = Unit(Key(host, tenant, 1));
  p.cpu_cores = 0.02 + 0.5 * u * u;  // mean ~0.19: 100 tenants use ~30% of 64 CPUs
  p.runq_waits_per_s = 200 + 3000 * Unit(Key(host, tenant, 2));
  p.runq_center = 11 + static_cast<int>(5 * Unit(Key(host, tenant, 3)));
  const double d = Unit(Key(host, tenant, 4));
  p.read_bytes_per_s = 5e4 + 5e7 * d * d * d;
  p.write_bytes_per_s = 2e4 + 2e7 * d * d;
  p.read_ops_per_s = 1 + p.read_bytes_per_s / 16384;
  p.write_ops_per_s = 1 + p.write_bytes_per_s / 8192;
  p.disk_center = 17 + static_cast<int>(3 * Unit(Key(host, tenant, 5)));
  const double n = Unit(Key(host, tenant, 6));
  p.rx_bytes_per_s = 1e4 + 2e7 * n * n * n;
  p.tx_bytes_per_s = 1e4 + 1e7 * n * n;
  p.drops_per_s = Unit(Key(host, tenant, 7)) < 0.01 ? 0.2 : 0;
  p.cpu_psi = 0.02 * Unit(Key(host, tenant, 8));
  p.io_psi = 0.01 * Unit(Key(host, tenant, 9));
  if (hog_host) {
    if (tenant == 0) {
      p.cpu_cores = 0.85 * kHostCpus;  // the host is contended, the hog over its share
    } else {
      p.runq_center += 9;  // neighbours wait ~1-16 ms
      p.cpu_psi = 0.25;
    }
  }
  return p;
}

// A tenant's cumulative counters at one report.
struct TenantValues {
  uint64_t cpu_usage_ns = 0, runq_wait_ns = 0, runq_waits = 0;
  std::array<uint64_t, kRunqBuckets> runq_hist{};
  uint64_t cpu_psi_some_us = 0, cpu_psi_full_us = 0, io_psi_some_us = 0, io_psi_full_us = 0;
  uint32_t disk_major = 253, disk_minor = 0;
  uint64_t read_bytes = 0, write_bytes = 0, read_ops = 0, write_ops = 0;
  std::array<uint64_t, kDiskBuckets> disk_hist{};
  uint64_t rx_bytes = 0, tx_bytes = 0, rx_packets = 0, tx_packets = 0, rx_drops = 0, tx_drops = 0;
};

// Shares of a histogram's samples around its centre bucket.
constexpr std::array<double, 6> kShape = {0.05, 0.2, 0.35, 0.25, 0.1, 0.05};

// Counters at report `seq` are rate x (seq + 0.4 u) with u in [0, 1) drawn
// per report: each second's increment varies by +-40 % and never goes down.
void Values(const Profile& p, uint32_t host, uint32_t tenant, uint64_t seq, double interval_s,
            TenantValues* v) {
  const double at =
      (static_cast<double>(seq) + 0.4 * Unit(Key(host, tenant, seq << 8))) * interval_s;
  auto c = [at](double rate) { return static_cast<uint64_t>(rate * at); };
  v->cpu_usage_ns = c(p.cpu_cores * 1e9);
  v->runq_waits = c(p.runq_waits_per_s);
  const double mean_wait_ns = 1.5 * static_cast<double>(uint64_t{1} << p.runq_center);
  v->runq_wait_ns = c(p.runq_waits_per_s * mean_wait_ns);
  v->runq_hist.fill(0);
  for (size_t k = 0; k < kShape.size(); ++k) {
    const int b = std::clamp(p.runq_center - 2 + static_cast<int>(k), 8, kRunqBuckets - 1);
    v->runq_hist[b] += c(p.runq_waits_per_s * kShape[k]);
  }
  v->cpu_psi_some_us = c(p.cpu_psi * 1e6);
  v->cpu_psi_full_us = c(p.cpu_psi * 0.5e6);
  v->io_psi_some_us = c(p.io_psi * 1e6);
  v->io_psi_full_us = c(p.io_psi * 0.5e6);
  v->disk_minor = tenant;
  v->read_bytes = c(p.read_bytes_per_s);
  v->write_bytes = c(p.write_bytes_per_s);
  v->read_ops = c(p.read_ops_per_s);
  v->write_ops = c(p.write_ops_per_s);
  v->disk_hist.fill(0);
  const double ops = p.read_ops_per_s + p.write_ops_per_s;
  for (size_t k = 0; k < kShape.size(); ++k) {
    const int b = std::clamp(p.disk_center - 2 + static_cast<int>(k), 10, kDiskBuckets - 1);
    v->disk_hist[b] += c(ops * kShape[k]);
  }
  v->rx_bytes = c(p.rx_bytes_per_s);
  v->tx_bytes = c(p.tx_bytes_per_s);
  v->rx_packets = c(p.rx_bytes_per_s / 900);
  v->tx_packets = c(p.tx_bytes_per_s / 700);
  v->rx_drops = c(p.drops_per_s);
}

// A libvirt-style UUID for (host, tenant): 8-4-4-4-12 hex digits, version 4.
// Formatted by hand: the generator makes a million a second.
using TenantIdChars = std::array<char, 36>;
TenantIdChars TenantIdOf(uint32_t host, uint32_t tenant) {
  const uint64_t a = Mix(Key(host, tenant, 11)), b = Mix(Key(host, tenant, 12));
  TenantIdChars out;
  auto hex = [&out](size_t at, uint64_t v, size_t digits) {
    for (size_t i = digits; i > 0; --i, v >>= 4) out[at + i - 1] = "0123456789abcdef"[v & 15];
  };
  hex(0, a >> 32, 8);
  out[8] = '-';
  hex(9, a >> 16, 4);
  out[13] = '-';
  out[14] = '4';
  hex(15, a, 3);
  out[18] = '-';
  out[19] = '8';
  hex(20, b >> 48, 3);
  out[23] = '-';
  hex(24, b, 12);
  return out;
}
std::string TenantId(uint32_t host, uint32_t tenant) {
  const TenantIdChars id = TenantIdOf(host, tenant);
  return std::string(id.data(), id.size());
}
std::string HostId(uint32_t host) { return absl::StrFormat("bench-host-%05u", host); }
std::string Interface(uint32_t host, uint32_t tenant) {
  return absl::StrCat("vnet", (host * 131 + tenant) % 100000);
}

v1::Hello MakeHello(uint32_t host, int64_t epoch_unix_ns, uint32_t interval_ms) {
  v1::Hello hello;
  hello.set_host_id(HostId(host));
  hello.set_hostname(absl::StrCat(HostId(host), ".bench.example"));
  hello.set_agent_version("ingest_load");
  hello.set_epoch_unix_ns(epoch_unix_ns);
  hello.set_layout(v1::CGROUP_LAYOUT_HYBRID);
  hello.set_cpu_hierarchy("cpu");
  v1::HostCapacity* capacity = hello.mutable_capacity();
  capacity->set_cpus(kHostCpus);
  for (uint32_t d = 0; d < 2; ++d) {
    v1::DiskCapacity* disk = capacity->add_disks();
    disk->mutable_device()->set_major(259);
    disk->mutable_device()->set_minor(d);
    disk->set_name(absl::StrCat("nvme", d, "n1"));
    disk->set_bandwidth_bytes_per_s(3e9);
    disk->set_ops_per_s(500'000);
  }
  v1::InterfaceCapacity* link = capacity->add_interfaces();
  link->set_name("bond0");
  link->set_rx_bytes_per_s(3.125e9);
  link->set_tx_bytes_per_s(3.125e9);
  hello.set_interval_ms(interval_ms);
  return hello;
}

v1::TenantInventory MakeInventory(uint32_t host, uint32_t tenants) {
  v1::TenantInventory inventory;
  inventory.set_full(true);
  for (uint32_t t = 0; t < tenants; ++t) {
    v1::Tenant* tenant = inventory.add_upserted();
    tenant->set_id(TenantId(host, t));
    tenant->set_name(absl::StrFormat("vm-%05u-%03u", host, t));
    tenant->set_account(absl::StrFormat("customer-%u", Mix(Key(host, t, 13)) % 5000));
    tenant->set_weight(1);
    tenant->set_source(v1::TENANT_SOURCE_LIBVIRT);
    const std::string scope = absl::StrFormat(
        "machine.slice/machine-qemu\\x2d%u\\x2dvm\\x2d%05u\\x2d%03u.scope", t + 1, host, t);
    for (const char* hierarchy : {"unified", "cpu", "blkio"}) {
      v1::CgroupRef* cgroup = tenant->add_cgroups();
      cgroup->set_hierarchy(hierarchy);
      cgroup->set_path(scope);
      cgroup->set_id(Mix(Key(host, t, 14)) & 0xffffff);
    }
    tenant->add_interfaces(Interface(host, t));
    v1::DeviceId* disk = tenant->add_disks();
    disk->set_major(253);
    disk->set_minor(t);
  }
  return inventory;
}

// --- protobuf wire encoding ----------------------------------------------------

// Appends protobuf wire format to a reused buffer. Zero scalars are skipped,
// as proto3 serialization does, so the bytes equal libprotobuf's.
class Wire {
 public:
  void Clear() { len_ = 0; }
  // Room for `n` more bytes; every field write below stays within it.
  void Reserve(size_t n) {
    if (buf_.size() < len_ + n) buf_.resize(std::max(buf_.size() * 2, len_ + n));
  }
  void Varint(uint64_t v) {
    char* p = buf_.data() + len_;
    while (v >= 0x80) {
      *p++ = static_cast<char>(v | 0x80);
      v >>= 7;
    }
    *p++ = static_cast<char>(v);
    len_ = static_cast<size_t>(p - buf_.data());
  }
  void Tag(uint32_t field, uint32_t wire_type) { Varint(field << 3 | wire_type); }
  void U64(uint32_t field, uint64_t v) {
    if (v == 0) return;
    Tag(field, 0);
    Varint(v);
  }
  void Str(uint32_t field, absl::string_view s) {
    if (s.empty()) return;
    Tag(field, 2);
    Varint(s.size());
    std::memcpy(buf_.data() + len_, s.data(), s.size());
    len_ += s.size();
  }
  void Packed(uint32_t field, const uint64_t* values, size_t n) {
    if (n == 0) return;
    const size_t at = Begin(field);
    for (size_t i = 0; i < n; ++i) Varint(values[i]);
    End(at);
  }
  // A length-delimited field whose length is known at End.
  size_t Begin(uint32_t field) {
    Tag(field, 2);
    const size_t at = len_;
    len_ += kLenRoom;
    return at;
  }
  void End(size_t at) {
    const size_t body = len_ - at - kLenRoom;
    char length[kLenRoom];
    size_t n = 0;
    for (uint64_t v = body;; v >>= 7) {
      if (v < 0x80) {
        length[n++] = static_cast<char>(v);
        break;
      }
      length[n++] = static_cast<char>(v | 0x80);
    }
    std::memmove(buf_.data() + at + n, buf_.data() + at + kLenRoom, body);
    std::memcpy(buf_.data() + at, length, n);
    len_ = at + n + body;
  }
  const char* data() const { return buf_.data(); }
  size_t size() const { return len_; }

 private:
  static constexpr size_t kLenRoom = 5;  // messages stay below 2^35 bytes
  std::string buf_;
  size_t len_ = 0;
};

void EncodeTenant(absl::string_view id, absl::string_view interface, const TenantValues& v,
                  Wire* w) {
  w->Reserve(4096);
  const size_t tenant = w->Begin(4);  // UsageReport.tenants
  w->Str(1, id);
  const size_t cpu = w->Begin(2);
  w->U64(1, v.cpu_usage_ns);
  w->U64(2, v.runq_wait_ns);
  w->U64(3, v.runq_waits);
  const size_t hist = w->Begin(4);
  w->Packed(1, v.runq_hist.data(), v.runq_hist.size());
  w->End(hist);
  w->End(cpu);
  const size_t cpu_psi = w->Begin(3);
  w->U64(1, 1);
  w->U64(2, v.cpu_psi_some_us);
  w->U64(3, v.cpu_psi_full_us);
  w->End(cpu_psi);
  const size_t io_psi = w->Begin(4);
  w->U64(1, 1);
  w->U64(2, v.io_psi_some_us);
  w->U64(3, v.io_psi_full_us);
  w->End(io_psi);
  const size_t disk = w->Begin(5);
  const size_t device = w->Begin(1);
  w->U64(1, v.disk_major);
  w->U64(2, v.disk_minor);
  w->End(device);
  w->U64(2, v.read_bytes);
  w->U64(3, v.write_bytes);
  w->U64(4, v.read_ops);
  w->U64(5, v.write_ops);
  const size_t latency = w->Begin(6);
  w->Packed(1, v.disk_hist.data(), v.disk_hist.size());
  w->End(latency);
  w->End(disk);
  const size_t net = w->Begin(6);
  w->Str(1, interface);
  w->U64(2, v.rx_bytes);
  w->U64(3, v.tx_bytes);
  w->U64(4, v.rx_packets);
  w->U64(5, v.tx_packets);
  w->U64(6, v.rx_drops);
  w->U64(7, v.tx_drops);
  w->End(net);
  w->End(tenant);
}

void FillTenant(const std::string& id, const std::string& interface, const TenantValues& v,
                v1::TenantCounters* t) {
  t->set_tenant_id(id);
  v1::CpuCounters* cpu = t->mutable_cpu();
  cpu->set_usage_ns(v.cpu_usage_ns);
  cpu->set_runq_wait_ns(v.runq_wait_ns);
  cpu->set_runq_waits(v.runq_waits);
  for (uint64_t b : v.runq_hist) cpu->mutable_runq_wait_hist()->add_buckets(b);
  t->mutable_cpu_pressure()->set_present(true);
  t->mutable_cpu_pressure()->set_some_total_us(v.cpu_psi_some_us);
  t->mutable_cpu_pressure()->set_full_total_us(v.cpu_psi_full_us);
  t->mutable_io_pressure()->set_present(true);
  t->mutable_io_pressure()->set_some_total_us(v.io_psi_some_us);
  t->mutable_io_pressure()->set_full_total_us(v.io_psi_full_us);
  v1::DiskCounters* disk = t->add_disks();
  disk->mutable_device()->set_major(v.disk_major);
  disk->mutable_device()->set_minor(v.disk_minor);
  disk->set_read_bytes(v.read_bytes);
  disk->set_write_bytes(v.write_bytes);
  disk->set_read_ops(v.read_ops);
  disk->set_write_ops(v.write_ops);
  for (uint64_t b : v.disk_hist) disk->mutable_latency()->add_buckets(b);
  v1::NetCounters* net = t->add_net();
  net->set_interface(interface);
  net->set_rx_bytes(v.rx_bytes);
  net->set_tx_bytes(v.tx_bytes);
  net->set_rx_packets(v.rx_packets);
  net->set_tx_packets(v.tx_packets);
  net->set_rx_drops(v.rx_drops);
  net->set_tx_drops(v.tx_drops);
}

// The host and agent parts of a report: what a real agent adds to the tenants.
struct HostPart {
  uint64_t cpu_busy_ns, cpu_total_ns, disk_bytes, net_bytes, agent_cpu_ns;
};

HostPart MakeHostPart(uint32_t tenants, uint64_t seq, double interval_s) {
  const double at = static_cast<double>(seq) * interval_s;
  return HostPart{static_cast<uint64_t>(at * 0.3 * kHostCpus * 1e9),
                  static_cast<uint64_t>(at * kHostCpus * 1e9), static_cast<uint64_t>(at * 2e8),
                  static_cast<uint64_t>(at * 3e8),
                  static_cast<uint64_t>(at * 1.5e6 * (1 + tenants / 100.0))};
}

constexpr std::array<const char*, 8> kPrograms = {
    "fw_cpu_runtime_btf", "fw_runq_wakeup_btf",   "fw_runq_wakeup_new_btf", "fw_runq_switch_btf",
    "fw_disk_issue_btf",  "fw_disk_complete_btf", "fw_net_tc_ingress",      "fw_net_tc_egress"};

void EncodeHostPart(const HostPart& h, uint32_t tenants, Wire* w) {
  w->Reserve(4096);
  const size_t host = w->Begin(5);
  w->U64(1, h.cpu_busy_ns);
  w->U64(2, h.cpu_total_ns);
  for (uint32_t d = 0; d < 2; ++d) {
    const size_t disk = w->Begin(3);
    const size_t device = w->Begin(1);
    w->U64(1, 259);
    w->U64(2, d);
    w->End(device);
    w->U64(2, h.disk_bytes);
    w->U64(3, h.disk_bytes / 2);
    w->U64(4, h.disk_bytes / 16384);
    w->U64(5, h.disk_bytes / 8192);
    w->End(disk);
  }
  const size_t net = w->Begin(4);
  w->Str(1, "bond0");
  w->U64(2, h.net_bytes);
  w->U64(3, h.net_bytes / 2);
  w->U64(4, h.net_bytes / 900);
  w->U64(5, h.net_bytes / 1400);
  w->End(net);
  w->End(host);
  const size_t agent = w->Begin(6);
  w->U64(1, h.agent_cpu_ns);
  w->U64(2, 24u << 20);
  for (const char* name : kPrograms) {
    const size_t program = w->Begin(3);
    w->Str(1, name);
    w->U64(2, h.agent_cpu_ns * 3);
    w->U64(3, h.agent_cpu_ns / 100);
    w->End(program);
  }
  w->U64(5, tenants);
  w->U64(6, 4096);
  w->End(agent);
}

void FillHostPart(const HostPart& h, uint32_t tenants, v1::UsageReport* report) {
  v1::HostCounters* host = report->mutable_host();
  host->set_cpu_busy_ns(h.cpu_busy_ns);
  host->set_cpu_total_ns(h.cpu_total_ns);
  for (uint32_t d = 0; d < 2; ++d) {
    v1::DiskCounters* disk = host->add_disks();
    disk->mutable_device()->set_major(259);
    disk->mutable_device()->set_minor(d);
    disk->set_read_bytes(h.disk_bytes);
    disk->set_write_bytes(h.disk_bytes / 2);
    disk->set_read_ops(h.disk_bytes / 16384);
    disk->set_write_ops(h.disk_bytes / 8192);
  }
  v1::NetCounters* net = host->add_net();
  net->set_interface("bond0");
  net->set_rx_bytes(h.net_bytes);
  net->set_tx_bytes(h.net_bytes / 2);
  net->set_rx_packets(h.net_bytes / 900);
  net->set_tx_packets(h.net_bytes / 1400);
  v1::AgentSelfCounters* agent = report->mutable_agent();
  agent->set_cpu_ns(h.agent_cpu_ns);
  agent->set_rss_bytes(24u << 20);
  for (const char* name : kPrograms) {
    v1::BpfProgramStats* program = agent->add_programs();
    program->set_name(name);
    program->set_run_time_ns(h.agent_cpu_ns * 3);
    program->set_run_count(h.agent_cpu_ns / 100);
  }
  agent->set_tenant_slots_used(tenants);
  agent->set_tenant_slots_max(4096);
}

// Builds the wire bytes of AgentMessage{report} for one host and seq.
class ReportEncoder {
 public:
  explicit ReportEncoder(const Options& options) : options_(options) {}

  void Encode(uint32_t host, uint64_t seq, int64_t timestamp_unix_ns, uint64_t monotonic_ns) {
    const double interval_s = options_.interval_ms / 1e3;
    const bool hog = IsHogHost(host, options_.hog_percent);
    wire_.Clear();
    wire_.Reserve(64);
    const size_t report = wire_.Begin(3);  // AgentMessage.report
    wire_.U64(1, seq);
    wire_.U64(2, static_cast<uint64_t>(timestamp_unix_ns));
    wire_.U64(3, monotonic_ns);
    for (uint32_t t = 0; t < options_.tenants; ++t) {
      Values(MakeProfile(host, t, hog), host, t, seq, interval_s, &values_);
      const TenantIdChars id = TenantIdOf(host, t);
      char interface[16];
      const int length =
          std::snprintf(interface, sizeof(interface), "vnet%u", (host * 131 + t) % 100000);
      EncodeTenant(absl::string_view(id.data(), id.size()),
                   absl::string_view(interface, static_cast<size_t>(length)), values_, &wire_);
    }
    EncodeHostPart(MakeHostPart(options_.tenants, seq, interval_s), options_.tenants, &wire_);
    wire_.End(report);
  }

  // The same report built with libprotobuf, to check Encode against.
  v1::AgentMessage Build(uint32_t host, uint64_t seq, int64_t timestamp_unix_ns,
                         uint64_t monotonic_ns) const {
    const double interval_s = options_.interval_ms / 1e3;
    const bool hog = IsHogHost(host, options_.hog_percent);
    v1::AgentMessage message;
    v1::UsageReport* report = message.mutable_report();
    report->set_seq(seq);
    report->set_timestamp_unix_ns(timestamp_unix_ns);
    report->set_monotonic_ns(monotonic_ns);
    TenantValues values;
    for (uint32_t t = 0; t < options_.tenants; ++t) {
      Values(MakeProfile(host, t, hog), host, t, seq, interval_s, &values);
      FillTenant(TenantId(host, t), Interface(host, t), values, report->add_tenants());
    }
    FillHostPart(MakeHostPart(options_.tenants, seq, interval_s), options_.tenants, report);
    return message;
  }

  const char* data() const { return wire_.data(); }
  size_t size() const { return wire_.size(); }

 private:
  const Options& options_;
  Wire wire_;
  TenantValues values_;
};

absl::Status CheckEncoder(const Options& options) {
  ReportEncoder encoder(options);
  for (uint32_t host : {0u, 1u, options.hosts - 1}) {
    for (uint64_t seq : {1u, 2u, 1000u}) {
      const int64_t ts = 1'700'000'000'000'000'000 + static_cast<int64_t>(seq);
      encoder.Encode(host, seq, ts, seq * 1'000'000'000);
      const std::string expected =
          encoder.Build(host, seq, ts, seq * 1'000'000'000).SerializeAsString();
      if (std::string(encoder.data(), encoder.size()) != expected) {
        return absl::InternalError(
            absl::StrCat("the wire encoder disagrees with libprotobuf for host ", host, " seq ",
                         seq, " (", encoder.size(), " vs ", expected.size(), " bytes)"));
      }
    }
  }
  return absl::OkStatus();
}

// --- the simulated agents ----------------------------------------------------

// What the generator has done, shared with the monitor (possibly through a
// pipe, so plain data).
struct GenSnapshot {
  enum Phase : uint32_t { kConnecting = 0, kReporting = 1, kStopping = 2, kDone = 3 };
  uint32_t phase = kConnecting;
  int64_t reporting_start_unix_ns = 0;
  uint64_t streams_started = 0;
  uint64_t hosts_connected = 0;  // Welcome received
  uint64_t streams_ended = 0;
  uint64_t streams_failed = 0;  // ended with a status other than OK
  uint64_t reports_sent = 0;
  uint64_t reports_sent_late = 0;  // more than one interval after they were due
  uint64_t reports_acked = 0;
  uint64_t tenant_samples_acked = 0;
  uint64_t limit_commands = 0;
  uint64_t bytes_sent = 0;
  double cpu_s = 0;
  std::array<uint64_t, kLagBuckets> ack_lag_hist{};  // ack received - report due, log2 ns
  char first_error[200] = {};
};
static_assert(sizeof(GenSnapshot) < PIPE_BUF, "snapshots go through a pipe in one write");

size_t LagBucket(int64_t ns) {
  return ns <= 1 ? 0
                 : std::min<size_t>(std::bit_width(static_cast<uint64_t>(ns)) - 1, kLagBuckets - 1);
}

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

class Generator;

// One host: one AgentLink stream.
class AgentSim final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  AgentSim(Generator* gen, uint32_t host) : gen_(gen), host_(host) {}

  void Start(grpc::GenericStub* stub, const v1::Hello& hello);
  // Reports up to `seq` are due.
  void Due(uint64_t seq) {
    {
      absl::MutexLock lock(&mu_);
      due_seq_ = std::max(due_seq_, seq);
    }
    Pump();
  }
  // Ends the stream after the write in flight, dropping reports not yet sent.
  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    Pump();
  }
  void Cancel() { context_.TryCancel(); }

  void OnWriteDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  void Pump();
  void Write(std::string_view bytes);
  void Close() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Generator* const gen_;
  const uint32_t host_;
  grpc::ClientContext context_;
  grpc::ByteBuffer read_buffer_;
  grpc::ByteBuffer write_buffer_;  // owned by the write in flight
  v1::ControllerMessage incoming_;
  uint64_t acked_seq_ = 0;  // read reactions only

  absl::Mutex mu_;
  uint64_t due_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t sent_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool inventory_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;  // no more writes; hold released
  std::vector<v1::AgentMessage> acks_ ABSL_GUARDED_BY(mu_);
};

class Generator {
 public:
  explicit Generator(const Options& options) : options_(options) {}

  // Connects every host, then reports for warmup + seconds and ends the
  // streams. Blocks.
  absl::Status Run(const std::string& address);
  GenSnapshot Snapshot() const;
  void Abort() { abort_.store(true); }

  const Options& options() const { return options_; }
  int64_t epoch_unix_ns() const { return epoch_unix_ns_; }
  // When report `seq` of `host` is due (it is also its timestamp).
  int64_t DueUnixNs(uint32_t host, uint64_t seq) const {
    return start_unix_ns_ + static_cast<int64_t>(seq - 1) * interval_ns_ + Offset(host);
  }
  uint64_t DueMonotonicNs(uint32_t host, uint64_t seq) const {
    return static_cast<uint64_t>(DueUnixNs(host, seq) - epoch_unix_ns_) + 1'000'000'000;
  }

  // Counters the streams update.
  std::atomic<uint64_t> hosts_connected{0}, streams_ended{0}, streams_failed{0}, reports_sent{0},
      reports_sent_late{0}, reports_acked{0}, limit_commands{0}, bytes_sent{0};
  std::array<std::atomic<uint64_t>, kLagBuckets> ack_lag_hist{};
  void RecordError(const std::string& message) {
    absl::MutexLock lock(&error_mu_);
    if (first_error_.empty()) first_error_ = message;
  }
  std::string EncodeReport(uint32_t host, uint64_t seq);

 private:
  int64_t Offset(uint32_t host) const {
    // Hosts report spread over the interval, as independent agents do.
    return static_cast<int64_t>(static_cast<double>(interval_ns_) * host / options_.hosts);
  }
  void SendLoop(uint32_t thread, uint64_t last_seq);

  const Options options_;
  const int64_t interval_ns_ = static_cast<int64_t>(options_.interval_ms) * 1'000'000;
  int64_t epoch_unix_ns_ = 0;
  std::atomic<int64_t> start_unix_ns_{0};
  std::atomic<uint32_t> phase_{GenSnapshot::kConnecting};
  std::atomic<uint64_t> streams_started_{0};
  std::atomic<bool> abort_{false};
  std::vector<std::unique_ptr<AgentSim>> sims_;
  mutable absl::Mutex error_mu_;
  std::string first_error_ ABSL_GUARDED_BY(error_mu_);
};

thread_local std::unique_ptr<ReportEncoder> tls_encoder;

std::string Generator::EncodeReport(uint32_t host, uint64_t seq) {
  if (!tls_encoder) tls_encoder = std::make_unique<ReportEncoder>(options_);
  const int64_t due = DueUnixNs(host, seq);
  if (absl::GetCurrentTimeNanos() - due > interval_ns_) {
    reports_sent_late.fetch_add(1, std::memory_order_relaxed);
  }
  tls_encoder->Encode(host, seq, due, DueMonotonicNs(host, seq));
  return std::string(tls_encoder->data(), tls_encoder->size());
}

void AgentSim::Start(grpc::GenericStub* stub, const v1::Hello& hello) {
  stub->PrepareBidiStreamingCall(&context_, kConnectMethod, grpc::StubOptions(), this);
  // Held until no more writes can be started, so OnDone cannot run first.
  AddHold();
  StartRead(&read_buffer_);
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = true;
  }
  v1::AgentMessage message;
  *message.mutable_hello() = hello;
  Write(message.SerializeAsString());
  StartCall();
}

void AgentSim::Write(std::string_view bytes) {
  grpc::Slice slice(bytes.data(), bytes.size());
  grpc::ByteBuffer buffer(&slice, 1);
  write_buffer_.Swap(&buffer);
  gen_->bytes_sent.fetch_add(bytes.size(), std::memory_order_relaxed);
  StartWrite(&write_buffer_);
}

void AgentSim::Close() {
  if (closed_) return;
  closed_ = true;
  RemoveHold();
}

void AgentSim::Pump() {
  enum class Next { kInventory, kAck, kReport, kWritesDone } next;
  v1::AgentMessage ack;
  uint64_t seq = 0;
  {
    absl::MutexLock lock(&mu_);
    if (write_in_flight_ || closed_) return;
    if (stopping_) {
      next = Next::kWritesDone;
    } else if (!inventory_sent_) {
      next = Next::kInventory;
      inventory_sent_ = true;
    } else if (!acks_.empty()) {
      next = Next::kAck;
      ack = std::move(acks_.back());
      acks_.pop_back();
    } else if (sent_seq_ < due_seq_) {
      next = Next::kReport;
      seq = ++sent_seq_;
    } else {
      return;
    }
    write_in_flight_ = true;
  }
  switch (next) {
    case Next::kInventory: {
      v1::AgentMessage message;
      *message.mutable_inventory() = MakeInventory(host_, gen_->options().tenants);
      Write(message.SerializeAsString());
      break;
    }
    case Next::kAck:
      Write(ack.SerializeAsString());
      break;
    case Next::kReport:
      Write(gen_->EncodeReport(host_, seq));
      gen_->reports_sent.fetch_add(1, std::memory_order_relaxed);
      break;
    case Next::kWritesDone: {
      StartWritesDone();
      absl::MutexLock lock(&mu_);
      Close();
      break;
    }
  }
}

void AgentSim::OnWriteDone(bool ok) {
  write_buffer_.Clear();
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok) {
      Close();
      return;
    }
  }
  Pump();
}

void AgentSim::OnReadDone(bool ok) {
  if (!ok) {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (!write_in_flight_) Close();
    return;
  }
  if (!grpc::SerializationTraits<v1::ControllerMessage>::Deserialize(&read_buffer_, &incoming_)
           .ok()) {
    gen_->RecordError("controller sent a message that does not parse");
  } else if (incoming_.has_welcome()) {
    gen_->hosts_connected.fetch_add(1, std::memory_order_relaxed);
  } else if (incoming_.has_report_ack()) {
    const uint64_t seq = incoming_.report_ack().seq();
    if (seq > acked_seq_) {
      gen_->reports_acked.fetch_add(seq - acked_seq_, std::memory_order_relaxed);
      acked_seq_ = seq;
      const int64_t lag = absl::GetCurrentTimeNanos() - gen_->DueUnixNs(host_, seq);
      gen_->ack_lag_hist[LagBucket(lag)].fetch_add(1, std::memory_order_relaxed);
    }
  } else if (incoming_.has_limit()) {
    gen_->limit_commands.fetch_add(1, std::memory_order_relaxed);
    v1::AgentMessage message;
    v1::LimitAck* ack = message.mutable_limit_ack();
    ack->set_command_id(incoming_.limit().command_id());
    ack->set_status_code(0);
    *ack->mutable_in_effect() = incoming_.limit().limit();
    absl::MutexLock lock(&mu_);
    acks_.push_back(std::move(message));
  }
  StartRead(&read_buffer_);
  Pump();
}

void AgentSim::OnDone(const grpc::Status& status) {
  if (!status.ok()) {
    gen_->streams_failed.fetch_add(1, std::memory_order_relaxed);
    gen_->RecordError(absl::StrCat("stream of ", HostId(host_), " ended: code ",
                                   status.error_code(), " ", status.error_message()));
  }
  gen_->streams_ended.fetch_add(1, std::memory_order_relaxed);
}

GenSnapshot Generator::Snapshot() const {
  GenSnapshot s;
  s.phase = phase_.load();
  s.reporting_start_unix_ns = start_unix_ns_.load();
  s.streams_started = streams_started_.load();
  s.hosts_connected = hosts_connected.load();
  s.streams_ended = streams_ended.load();
  s.streams_failed = streams_failed.load();
  s.reports_sent = reports_sent.load();
  s.reports_sent_late = reports_sent_late.load();
  s.reports_acked = reports_acked.load();
  s.tenant_samples_acked = s.reports_acked * options_.tenants;
  s.limit_commands = limit_commands.load();
  s.bytes_sent = bytes_sent.load();
  s.cpu_s = ProcessCpuSeconds();
  for (size_t i = 0; i < kLagBuckets; ++i) s.ack_lag_hist[i] = ack_lag_hist[i].load();
  absl::MutexLock lock(&error_mu_);
  std::snprintf(s.first_error, sizeof(s.first_error), "%s", first_error_.c_str());
  return s;
}

void Generator::SendLoop(uint32_t thread, uint64_t last_seq) {
  const uint32_t step = options_.sender_threads;
  for (uint64_t seq = 1; seq <= last_seq && !abort_.load(); ++seq) {
    for (uint32_t host = thread; host < options_.hosts && !abort_.load(); host += step) {
      const int64_t wait = DueUnixNs(host, seq) - absl::GetCurrentTimeNanos();
      // Sleep in steps of at least 1 ms; hosts due meanwhile go out together.
      if (wait > 1'000'000) absl::SleepFor(absl::Nanoseconds(wait));
      sims_[host]->Due(seq);
    }
  }
}

absl::Status Generator::Run(const std::string& address) {
  epoch_unix_ns_ = absl::GetCurrentTimeNanos();
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (uint32_t c = 0; c < options_.channels; ++c) {
    grpc::ChannelArguments args;
    // One TCP connection per channel.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("fairwatch.bench.channel", static_cast<int>(c));
    stubs.push_back(std::make_unique<grpc::GenericStub>(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)));
  }
  sims_.reserve(options_.hosts);
  for (uint32_t h = 0; h < options_.hosts; ++h) {
    sims_.push_back(std::make_unique<AgentSim>(this, h));
  }
  // Connect, at most connect_window Hellos unanswered at a time.
  const absl::Time connect_deadline = absl::Now() + absl::Seconds(60 + options_.hosts / 100);
  for (uint32_t h = 0; h < options_.hosts; ++h) {
    while (streams_started_.load() - hosts_connected.load() >= options_.connect_window) {
      if (absl::Now() > connect_deadline || abort_.load() || streams_ended.load() > 0) break;
      absl::SleepFor(absl::Milliseconds(1));
    }
    if (abort_.load()) break;
    sims_[h]->Start(stubs[h % stubs.size()].get(),
                    MakeHello(h, epoch_unix_ns_, options_.interval_ms));
    streams_started_.fetch_add(1);
  }
  while (hosts_connected.load() < options_.hosts && absl::Now() < connect_deadline &&
         !abort_.load() && streams_ended.load() == 0) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  absl::Status status = absl::OkStatus();
  if (hosts_connected.load() < options_.hosts) {
    status = absl::DeadlineExceededError(absl::StrCat("only ", hosts_connected.load(), " of ",
                                                      options_.hosts, " hosts were welcomed (",
                                                      streams_ended.load(), " streams ended)"));
  } else {
    // Start on a whole second, at least one second from now.
    start_unix_ns_ = (absl::GetCurrentTimeNanos() / 1'000'000'000 + 2) * 1'000'000'000;
    phase_ = GenSnapshot::kReporting;
    const uint64_t last_seq =
        (uint64_t{options_.warmup} + options_.seconds) * 1000 / options_.interval_ms + 1;
    std::vector<std::thread> senders;
    for (uint32_t t = 0; t < options_.sender_threads; ++t) {
      senders.emplace_back([this, t, last_seq] { SendLoop(t, last_seq); });
    }
    for (std::thread& sender : senders) sender.join();
  }
  phase_ = GenSnapshot::kStopping;
  for (auto& sim : sims_) sim->Stop();
  const absl::Time stop_deadline = absl::Now() + absl::Seconds(30);
  while (streams_ended.load() < streams_started_.load() && absl::Now() < stop_deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (streams_ended.load() < streams_started_.load()) {
    for (auto& sim : sims_) sim->Cancel();
    while (streams_ended.load() < streams_started_.load()) {
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  phase_ = GenSnapshot::kDone;
  return status;
}

// --- observing the controller ---------------------------------------------

uint64_t ReadRssBytes(const std::string& status_path) {
  std::ifstream in(status_path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
    }
  }
  return 0;
}

uint64_t MemAvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) == 0) {
      return std::strtoull(line.c_str() + 13, nullptr, 10) * 1024;
    }
  }
  return 0;
}

// utime + stime of a process, from /proc/PID/stat.
double PidCpuSeconds(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  // Fields after the command: state(3) ... utime(14) stime(15).
  std::vector<std::string> fields;
  size_t pos = close + 2;
  while (pos < stat.size() && fields.size() < 13) {
    const size_t space = stat.find(' ', pos);
    fields.push_back(stat.substr(pos, space - pos));
    pos = space == std::string::npos ? stat.size() : space + 1;
  }
  if (fields.size() < 13) return 0;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return static_cast<double>(std::strtoull(fields[11].c_str(), nullptr, 10) +
                             std::strtoull(fields[12].c_str(), nullptr, 10)) /
         ticks;
}

// CPU time all processes of the machine have used (/proc/stat: all but idle
// and iowait), in seconds.
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  return static_cast<double>(user + nice + system + irq + softirq + steal) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

// One observation of the controller and the generator.
struct Observation {
  int64_t unix_ns = 0;
  uint64_t hosts = 0;
  uint64_t tenant_samples = 0;  // accepted by the controller
  uint64_t reports = 0;
  std::vector<uint64_t> lag_hist;  // ingest lag (in-process) or ack lag (remote)
  uint64_t lag_sum_ns = 0;         // in-process only
  uint64_t intervals_judged = 0;
  uint64_t cases_opened = 0;
  bool has_judge = false;
  double controller_cpu_s = 0;
  uint64_t controller_rss = 0;
  double machine_busy_s = 0;
  GenSnapshot gen;
};

std::string Bytes(double b) {
  if (b >= 1e9) return absl::StrFormat("%.2f GB", b / 1e9);
  if (b >= 1e6) return absl::StrFormat("%.1f MB", b / 1e6);
  if (b >= 1e3) return absl::StrFormat("%.1f kB", b / 1e3);
  return absl::StrFormat("%.0f B", b);
}
std::string Ms(double ns) { return absl::StrFormat("%.1f ms", ns / 1e6); }

std::vector<uint64_t> HistDelta(const std::vector<uint64_t>& later,
                                const std::vector<uint64_t>& earlier) {
  std::vector<uint64_t> out(later.size());
  for (size_t i = 0; i < later.size(); ++i) {
    out[i] = later[i] - (i < earlier.size() ? earlier[i] : 0);
  }
  return out;
}

class Monitor {
 public:
  explicit Monitor(bool in_process) : in_process_(in_process) {}

  void Line(const Observation& prev, const Observation& now) const {
    const double dt = static_cast<double>(now.unix_ns - prev.unix_ns) / 1e9;
    if (dt <= 0) return;
    const auto lag = HistDelta(now.lag_hist, prev.lag_hist);
    std::string judge;
    if (now.has_judge) {
      judge =
          absl::StrFormat("  judged %.0f/s",
                          static_cast<double>(now.intervals_judged - prev.intervals_judged) / dt);
    }
    const double controller = (now.controller_cpu_s - prev.controller_cpu_s) / dt;
    const double generator = (now.gen.cpu_s - prev.gen.cpu_s) / dt;
    const double others = (now.machine_busy_s - prev.machine_busy_s) / dt - controller - generator;
    std::printf(
        "[%4.0f s] %s %.0f samples/s (%.0f reports/s)  %s p50 %s p99 %s%s  controller %.2f cores, "
        "RSS %s  generator %.2f cores  others %.2f cores\n",
        static_cast<double>(now.unix_ns - start_ns_) / 1e9, in_process_ ? "accepted" : "acked",
        static_cast<double>(now.tenant_samples - prev.tenant_samples) / dt,
        static_cast<double>(now.reports - prev.reports) / dt, in_process_ ? "lag" : "ack lag",
        Ms(Log2Quantile(lag, 0.5)).c_str(), Ms(Log2Quantile(lag, 0.99)).c_str(), judge.c_str(),
        controller, Bytes(now.controller_rss).c_str(), generator, std::max(0.0, others));
    std::fflush(stdout);
  }

  void set_start(int64_t ns) { start_ns_ = ns; }

 private:
  const bool in_process_;
  int64_t start_ns_ = 0;
};

std::string ModeLabel(bool in_process, const Options& o) {
  if (o.sink) return "gRPC sink (no parsing, no fleet, no judge): the transport's floor";
  if (in_process) {
    return o.judge ? "controller in process with judge (SQLite store)"
                   : "controller in process without judge";
  }
  return absl::StrCat("remote controller ", o.controller);
}

// Runs the reporting phase's observation loop and prints the summary.
// `observe` fills an Observation; returns false to stop early.
int Observe(const Options& o, bool in_process, const std::function<Observation()>& observe,
            const std::function<void()>& abort, uint64_t baseline_rss) {
  Monitor monitor(in_process);
  // Connecting.
  Observation obs = observe();
  const absl::Time begin = absl::Now();
  while (obs.gen.phase == GenSnapshot::kConnecting) {
    absl::SleepFor(absl::Seconds(1));
    obs = observe();
    std::printf("connecting: %" PRIu64 "/%u hosts welcomed, %" PRIu64
                " streams started, controller RSS %s\n",
                obs.gen.hosts_connected, o.hosts, obs.gen.streams_started,
                Bytes(obs.controller_rss).c_str());
    std::fflush(stdout);
    if (obs.gen.phase == GenSnapshot::kStopping || obs.gen.phase == GenSnapshot::kDone) break;
  }
  if (obs.gen.phase != GenSnapshot::kReporting) {
    std::fprintf(stderr, "ingest_load: connecting failed: %s\n", obs.gen.first_error);
    return 1;
  }
  const double connect_s = absl::ToDoubleSeconds(absl::Now() - begin);
  const int64_t start = obs.gen.reporting_start_unix_ns;
  monitor.set_start(start);
  // Wait for the first report to be due; the host state then is "connected".
  while (absl::GetCurrentTimeNanos() < start) absl::SleepFor(absl::Milliseconds(10));
  const Observation connected = observe();
  std::printf(
      "all %u hosts connected in %.1f s; reporting from now, %u s warm-up then %u s "
      "measured\n",
      o.hosts, connect_s, o.warmup, o.seconds);

  std::vector<Observation> per_second;
  per_second.push_back(connected);
  const int64_t end = start + int64_t{o.warmup + o.seconds} * 1'000'000'000;
  bool aborted = false;
  for (int64_t tick = start + 1'000'000'000; tick <= end; tick += 1'000'000'000) {
    const int64_t wait = tick - absl::GetCurrentTimeNanos();
    if (wait > 0) absl::SleepFor(absl::Nanoseconds(wait));
    per_second.push_back(observe());
    monitor.Line(per_second[per_second.size() - 2], per_second.back());
    const uint64_t available = MemAvailableBytes();
    if (available < o.min_available_mb << 20) {
      std::fprintf(stderr,
                   "ingest_load: MemAvailable %s is below --min-available-mb %" PRIu64
                   "; stopping\n",
                   Bytes(available).c_str(), o.min_available_mb);
      aborted = true;
      break;
    }
    if (per_second.back().gen.phase >= GenSnapshot::kStopping) {
      std::fprintf(stderr, "ingest_load: the generator stopped early: %s\n",
                   per_second.back().gen.first_error);
      aborted = true;
      break;
    }
  }
  abort();
  if (aborted || per_second.size() <= o.warmup + 1) return 1;

  const Observation& a = per_second[o.warmup];
  const Observation& b = per_second.back();
  const double window_s = static_cast<double>(b.unix_ns - a.unix_ns) / 1e9;
  std::vector<double> rates;
  for (size_t i = o.warmup + 1; i < per_second.size(); ++i) {
    const double dt = static_cast<double>(per_second[i].unix_ns - per_second[i - 1].unix_ns) / 1e9;
    rates.push_back(
        static_cast<double>(per_second[i].tenant_samples - per_second[i - 1].tenant_samples) / dt);
  }
  std::sort(rates.begin(), rates.end());
  const double offered = static_cast<double>(o.hosts) * o.tenants * 1000.0 / o.interval_ms;
  const double accepted = static_cast<double>(b.tenant_samples - a.tenant_samples) / window_s;
  const auto lag = HistDelta(b.lag_hist, a.lag_hist);
  const uint64_t lag_count = Log2Count(lag);
  const double cpu_s = b.controller_cpu_s - a.controller_cpu_s;
  const double gen_cpu_s = b.gen.cpu_s - a.gen.cpu_s;
  const double mem = static_cast<double>(b.controller_rss) - static_cast<double>(baseline_rss);

  std::printf("\n== ingest_load: %u hosts x %u tenants every %u ms, %u channels, %s ==\n", o.hosts,
              o.tenants, o.interval_ms, o.channels, ModeLabel(in_process, o).c_str());
  std::printf("offered           %.0f tenant-samples/s\n", offered);
  std::printf(
      "%-17s %.0f tenant-samples/s over %.0f s (median second %.0f, min %.0f) = %.1f%% "
      "of offered\n",
      in_process ? "accepted" : "acked", accepted, window_s, rates[rates.size() / 2], rates.front(),
      100 * accepted / offered);
  std::printf("%-17s p50 %s  p99 %s%s\n", in_process ? "ingest lag" : "ack lag",
              Ms(Log2Quantile(lag, 0.5)).c_str(), Ms(Log2Quantile(lag, 0.99)).c_str(),
              in_process && lag_count > 0
                  ? absl::StrCat("  mean ", Ms(static_cast<double>(b.lag_sum_ns - a.lag_sum_ns) /
                                               static_cast<double>(lag_count)))
                        .c_str()
                  : "");
  if (o.controller_pid > 0 || in_process) {
    std::printf("controller CPU    %.1f s in %.0f s = %.2f cores; %.2f us per tenant-sample\n",
                cpu_s, window_s, cpu_s / window_s,
                accepted > 0 ? 1e6 * cpu_s / (accepted * window_s) : 0.0);
    std::printf("controller RSS    %s before hosts, %s connected, %s at end\n",
                Bytes(static_cast<double>(baseline_rss)).c_str(),
                Bytes(static_cast<double>(connected.controller_rss)).c_str(),
                Bytes(static_cast<double>(b.controller_rss)).c_str());
    std::printf(
        "memory            %s per host, %s per tenant (RSS growth / hosts, / hosts x "
        "tenants)\n",
        Bytes(mem / o.hosts).c_str(),
        Bytes(mem / (static_cast<double>(o.hosts) * o.tenants)).c_str());
  }
  if (b.has_judge) {
    std::printf(
        "judge             %.0f intervals judged/s (of %.0f host-intervals/s offered), "
        "%" PRIu64 " cases opened in all\n",
        static_cast<double>(b.intervals_judged - a.intervals_judged) / window_s,
        o.hosts * 1000.0 / o.interval_ms, b.cases_opened);
  }
  std::printf("generator         %.2f cores; %" PRIu64 " reports sent late, %" PRIu64
              " limit commands answered, %s sent\n",
              gen_cpu_s / window_s, b.gen.reports_sent_late, b.gen.limit_commands,
              Bytes(static_cast<double>(b.gen.bytes_sent)).c_str());
  if (o.controller_pid > 0 || in_process) {
    const double machine = (b.machine_busy_s - a.machine_busy_s) / window_s;
    std::printf(
        "machine           %.2f of %ld cores busy: controller %.2f, generator %.2f, other "
        "processes %.2f\n",
        machine, sysconf(_SC_NPROCESSORS_ONLN), cpu_s / window_s, gen_cpu_s / window_s,
        std::max(0.0, machine - cpu_s / window_s - gen_cpu_s / window_s));
  }
  std::printf("target            1,000,000 tenant-samples/s: %s\n",
              accepted >= 1e6 ? "met" : "MISSED");
  return 0;
}

// --- modes --------------------------------------------------------------------

// CPU time of the calling thread.
double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Every step a report goes through, in one thread and without gRPC: what
// each costs per tenant-sample, free of the other processes on the machine.
int RunStages(const Options& o) {
  controller::FleetState fleet{controller::FleetOptions{}};
  controller::FairnessEngine engine{controller::FairnessParams{}};
  controller::Planner planner{controller::PlannerParams{}};
  ReportEncoder encoder(o);
  const int64_t epoch = absl::GetCurrentTimeNanos();
  for (uint32_t h = 0; h < o.hosts; ++h) {
    if (!fleet.OnHello(MakeHello(h, epoch, o.interval_ms), h + 1, absl::Now()).ok() ||
        !fleet.ApplyInventory(HostId(h), MakeInventory(h, o.tenants), absl::Now()).ok()) {
      std::fprintf(stderr, "ingest_load: setting up host %u failed\n", h);
      return 1;
    }
  }
  // As the agent link parses: into an arena with a kept first block.
  constexpr size_t kBlock = 1 << 20;
  std::unique_ptr<char[]> block(new char[kBlock]);
  google::protobuf::ArenaOptions arena_options;
  arena_options.initial_block = block.get();
  arena_options.initial_block_size = kBlock;
  arena_options.max_block_size = kBlock;
  google::protobuf::Arena arena(arena_options);

  const uint64_t reports = uint64_t{o.warmup} + o.seconds;
  const uint64_t interval_ns = uint64_t{o.interval_ms} * 1'000'000;
  struct Stage {
    const char* name;
    double seconds = 0;
  };
  Stage encode{"encode (generator, not controller)"}, parse{"parse AgentMessage"},
      ingest{"FleetState::IngestReport"}, interval{"FleetState::LastInterval"},
      evaluate{"FairnessEngine::Evaluate"}, plan{"Planner::Plan"};
  std::vector<std::string> wire(o.hosts);
  std::vector<absl::StatusOr<controller::HostInterval>> intervals;
  std::vector<controller::Evaluation> evaluations(o.hosts);
  uint64_t samples = 0;
  for (uint64_t seq = 1; seq <= reports; ++seq) {
    const bool measured = seq > o.warmup;
    const int64_t ts = epoch + static_cast<int64_t>(seq * interval_ns);
    double t = ThreadCpuSeconds();
    auto lap = [&t](Stage* stage, bool count) {
      const double now = ThreadCpuSeconds();
      if (count) stage->seconds += now - t;
      t = now;
    };
    for (uint32_t h = 0; h < o.hosts; ++h) {
      encoder.Encode(h, seq, ts, seq * interval_ns);
      wire[h].assign(encoder.data(), encoder.size());
    }
    lap(&encode, measured);
    for (uint32_t h = 0; h < o.hosts; ++h) {
      auto* message = google::protobuf::Arena::CreateMessage<v1::AgentMessage>(&arena);
      if (!message->ParseFromString(wire[h])) return 1;
      arena.Reset();
    }
    lap(&parse, measured);
    for (uint32_t h = 0; h < o.hosts; ++h) {
      auto* message = google::protobuf::Arena::CreateMessage<v1::AgentMessage>(&arena);
      if (!message->ParseFromString(wire[h])) return 1;
      std::string report_bytes = wire[h].substr(wire[h].size() - message->report().ByteSizeLong());
      if (!fleet.IngestReport(HostId(h), message->report(), std::move(report_bytes)).ok()) {
        return 1;
      }
      arena.Reset();
    }
    lap(&ingest, measured);
    intervals.clear();
    const std::vector<std::string> ids = fleet.HostIds();
    for (const std::string& id : ids) intervals.push_back(fleet.LastInterval(id));
    lap(&interval, measured);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!intervals[i].ok()) continue;
      evaluations[i] = engine.Evaluate(*intervals[i], planner.LimitsOn(ids[i]));
    }
    lap(&evaluate, measured);
    const absl::Time now = absl::FromUnixNanos(ts);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!intervals[i].ok() || evaluations[i].seq == 0) continue;
      (void)planner.Plan(now, evaluations[i], intervals[i]->tenants.size(), nullptr);
    }
    lap(&plan, measured);
    if (measured) samples += uint64_t{o.hosts} * o.tenants;
  }
  ingest.seconds -= parse.seconds;  // that pass parsed too
  std::printf(
      "== stages: %u hosts x %u tenants, %u reports each measured (after %u), one thread ==\n",
      o.hosts, o.tenants, o.seconds, o.warmup);
  double controller_ns = 0;
  for (const Stage* stage : {&encode, &parse, &ingest, &interval, &evaluate, &plan}) {
    const double ns = 1e9 * stage->seconds / static_cast<double>(samples);
    if (stage != &encode) controller_ns += ns;
    std::printf("%-36s %8.1f ns per tenant-sample\n", stage->name, ns);
  }
  std::printf(
      "%-36s %8.1f ns per tenant-sample = %.0f tenant-samples/s per core "
      "(gRPC, sockets and SQLite not included)\n",
      "controller total", controller_ns, 1e9 / controller_ns);
  return 0;
}

int RunRemote(const Options& o) {
  Generator gen(o);
  std::thread runner([&] {
    absl::Status status = gen.Run(o.controller);
    if (!status.ok()) gen.RecordError(std::string(status.message()));
  });
  const std::string status_path = absl::StrCat("/proc/", o.controller_pid, "/status");
  auto observe = [&] {
    Observation obs;
    obs.unix_ns = absl::GetCurrentTimeNanos();
    obs.machine_busy_s = MachineBusySeconds();
    obs.gen = gen.Snapshot();
    obs.hosts = obs.gen.hosts_connected;
    obs.tenant_samples = obs.gen.tenant_samples_acked;
    obs.reports = obs.gen.reports_acked;
    obs.lag_hist.assign(obs.gen.ack_lag_hist.begin(), obs.gen.ack_lag_hist.end());
    if (o.controller_pid > 0) {
      obs.controller_cpu_s = PidCpuSeconds(o.controller_pid);
      obs.controller_rss = ReadRssBytes(status_path);
    }
    return obs;
  };
  const uint64_t baseline = o.controller_pid > 0 ? ReadRssBytes(status_path) : 0;
  const int rc = Observe(
      o, false, observe, [&] { gen.Abort(); }, baseline);
  gen.Abort();
  runner.join();
  return rc;
}

// The generator half of the in-process mode, in a forked child: reads the
// port, runs, and streams snapshots to the parent.
[[noreturn]] void RunChild(const Options& o, int port_fd, int snapshot_fd) {
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  int port = 0;
  if (read(port_fd, &port, sizeof(port)) != sizeof(port) || port <= 0) _exit(0);
  Generator gen(o);
  std::atomic<bool> done{false};
  std::thread reporter([&] {
    while (!done.load()) {
      // Dropped when the parent is not reading (non-blocking pipe).
      GenSnapshot s = gen.Snapshot();
      (void)!write(snapshot_fd, &s, sizeof(s));
      // The parent closes the port pipe to ask for an early stop.
      pollfd fd{port_fd, POLLIN, 0};
      if (poll(&fd, 1, 200) > 0) gen.Abort();
    }
  });
  absl::Status status = gen.Run(absl::StrCat("127.0.0.1:", port));
  if (!status.ok()) gen.RecordError(std::string(status.message()));
  done = true;
  reporter.join();
  GenSnapshot s = gen.Snapshot();
  (void)!write(snapshot_fd, &s, sizeof(s));
  _exit(status.ok() ? 0 : 1);
}

// --- sink: what gRPC alone costs ---------------------------------------------
//
// A server on the agent-link method that parses nothing: it welcomes each
// stream, counts messages and acknowledges every report by its position
// (message 1 is the Hello, 2 the inventory, n >= 3 report n - 2, which is
// what the generator sends when no limit command reaches it). What it costs
// is the floor any controller built on gRPC pays on this machine.
class SinkStream final : public grpc::ServerGenericBidiReactor {
 public:
  SinkStream() { StartRead(&read_buffer_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      MaybeFinish();
      return;
    }
    read_buffer_.Clear();
    ++messages_;
    if (messages_ == 1) {
      v1::ControllerMessage welcome;
      welcome.mutable_welcome()->set_controller_version("sink");
      Queue(welcome.SerializeAsString());
    } else if (messages_ >= 3) {
      v1::ControllerMessage ack;
      ack.mutable_report_ack()->set_seq(messages_ - 2);
      Queue(ack.SerializeAsString());
    }
    StartRead(&read_buffer_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    write_buffer_.Clear();
    writing_ = false;
    if (!ok) pending_.clear();
    WriteNext();
    MaybeFinish();
  }

  void OnDone() override { delete this; }

 private:
  void Queue(std::string bytes) {
    absl::MutexLock lock(&mu_);
    pending_.push_back(std::move(bytes));
    WriteNext();
  }
  void WriteNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || pending_.empty()) return;
    writing_ = true;
    grpc::Slice slice(pending_.front().data(), pending_.front().size());
    pending_.erase(pending_.begin());
    grpc::ByteBuffer buffer(&slice, 1);
    write_buffer_.Swap(&buffer);
    StartWrite(&write_buffer_);
  }
  void MaybeFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (reading_ || writing_ || finished_) return;
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  grpc::ByteBuffer read_buffer_;  // read reactions only
  uint64_t messages_ = 0;         // read reactions only
  absl::Mutex mu_;
  grpc::ByteBuffer write_buffer_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_ ABSL_GUARDED_BY(mu_) = true;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

class SinkService final : public grpc::CallbackGenericService {
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override {
    if (context->method() != kConnectMethod) {
      // Not ours: end it at once.
      class Refuse final : public grpc::ServerGenericBidiReactor {
       public:
        Refuse() { Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "sink")); }
        void OnDone() override { delete this; }
      };
      return new Refuse;
    }
    return new SinkStream;
  }
};

// The sink in a forked child; the parent runs the generator as against a
// remote controller, with the child's CPU and RSS.
int RunSink(Options o) {
  int port_pipe[2];
  if (pipe(port_pipe) != 0) {
    std::perror("ingest_load: pipe");
    return 1;
  }
  const pid_t child = fork();  // before gRPC starts any thread
  if (child < 0) {
    std::perror("ingest_load: fork");
    return 1;
  }
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    close(port_pipe[0]);
    SinkService service;
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterCallbackGenericService(&service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (server == nullptr) port = -1;
    (void)!write(port_pipe[1], &port, sizeof(port));
    if (server != nullptr) server->Wait();  // until the parent's death signal
    _exit(0);
  }
  close(port_pipe[1]);
  int port = 0;
  if (read(port_pipe[0], &port, sizeof(port)) != sizeof(port) || port <= 0) {
    std::fprintf(stderr, "ingest_load: the sink server did not start\n");
    kill(child, SIGTERM);
    waitpid(child, nullptr, 0);
    return 1;
  }
  close(port_pipe[0]);
  std::printf("gRPC sink in process %d on 127.0.0.1:%d, generator in process %d\n", child, port,
              getpid());
  std::fflush(stdout);
  o.controller = absl::StrCat("127.0.0.1:", port);
  o.controller_pid = child;
  const int rc = RunRemote(o);
  kill(child, SIGTERM);
  waitpid(child, nullptr, 0);
  return rc;
}

int RunInProcess(const Options& o) {
  int port_pipe[2], snapshot_pipe[2];
  if (pipe(port_pipe) != 0 || pipe(snapshot_pipe) != 0) {
    std::perror("ingest_load: pipe");
    return 1;
  }
  // Fork before gRPC starts any thread.
  const pid_t child = fork();
  if (child < 0) {
    std::perror("ingest_load: fork");
    return 1;
  }
  if (child == 0) {
    close(port_pipe[1]);
    close(snapshot_pipe[0]);
    fcntl(snapshot_pipe[1], F_SETFL, O_NONBLOCK);
    RunChild(o, port_pipe[0], snapshot_pipe[1]);
  }
  close(port_pipe[0]);
  close(snapshot_pipe[1]);
  fcntl(snapshot_pipe[0], F_SETFL, O_NONBLOCK);

  char dir_template[] = "/tmp/fw-ingest-load-XXXXXX";
  const char* dir = mkdtemp(dir_template);
  int rc = 1;
  {
    v1::ControllerConfig config;
    config.set_listen_address("127.0.0.1:0");
    config.set_insecure_plaintext(true);
    controller::ApplyControllerDefaults(&config);
    std::unique_ptr<controller::SqliteStore> store;
    if (o.judge) {
      auto opened = controller::SqliteStore::Open(absl::StrCat(dir, "/controller.db"));
      if (!opened.ok()) {
        std::fprintf(stderr, "ingest_load: %s\n", std::string(opened.status().message()).c_str());
        kill(child, SIGTERM);
        waitpid(child, nullptr, 0);
        return 1;
      }
      store = std::move(*opened);
    }
    auto server =
        controller::ControllerServer::Start(config, grpc::InsecureServerCredentials(), store.get());
    if (!server.ok()) {
      std::fprintf(stderr, "ingest_load: %s\n", std::string(server.status().message()).c_str());
      kill(child, SIGTERM);
      waitpid(child, nullptr, 0);
      return 1;
    }
    controller::ControllerServer& ctl = **server;
    absl::SleepFor(absl::Milliseconds(200));
    const uint64_t baseline = ReadRssBytes("/proc/self/status");
    std::printf("controller in process %d on 127.0.0.1:%d (judge %s), generator in process %d\n",
                getpid(), ctl.port(), o.judge ? "on" : "off", child);
    std::fflush(stdout);
    const int port = ctl.port();
    (void)!write(port_pipe[1], &port, sizeof(port));

    GenSnapshot latest;
    auto observe = [&] {
      GenSnapshot s;
      while (read(snapshot_pipe[0], &s, sizeof(s)) == sizeof(s)) latest = s;
      Observation obs;
      obs.unix_ns = absl::GetCurrentTimeNanos();
      obs.controller_cpu_s = ProcessCpuSeconds();
      obs.machine_busy_s = MachineBusySeconds();
      obs.gen = latest;
      obs.gen.cpu_s = PidCpuSeconds(child);
      const controller::FleetIngestStats fleet = ctl.fleet().ingest_stats();
      const controller::AgentLinkStats link = ctl.agent_link().stats();
      obs.tenant_samples = fleet.tenant_samples_ingested;
      obs.reports = fleet.reports_ingested;
      obs.lag_hist = link.ingest_lag_hist;
      obs.lag_sum_ns = link.ingest_lag_sum_ns;
      obs.controller_rss = ReadRssBytes("/proc/self/status");
      obs.hosts = ctl.fleet().host_count();
      if (ctl.judge() != nullptr) {
        // Last: it waits while a judge pass runs.
        const controller::JudgeStats judged = ctl.judge()->stats();
        obs.has_judge = true;
        obs.intervals_judged = judged.intervals_judged;
        obs.cases_opened = judged.cases_opened;
      }
      return obs;
    };
    rc = Observe(
        o, true, observe, [&] { close(port_pipe[1]); }, baseline);
    int child_status = 0;
    waitpid(child, &child_status, 0);
    ctl.Shutdown(absl::Seconds(2));
  }
  std::error_code ignored;
  if (dir != nullptr) std::filesystem::remove_all(dir, ignored);
  return rc;
}

}  // namespace
}  // namespace fairwatch::bench

int RunIngestLoad(int argc, char** argv) {
  using fairwatch::bench::Options;
  Options o;
  CLI::App app{
      "ingest_load: the controller ingest benchmark. Simulates --hosts agents (one AgentLink "
      "stream each, spread over --channels connections) reporting --tenants tenants every "
      "--interval-ms with realistic cumulative counters, and prints per second and at the end "
      "the tenant-samples/s the controller accepted, ingest lag, controller CPU and RSS, memory "
      "per host and per tenant, and intervals judged."};
  app.footer(
      "Modes:\n"
      "  default        controller in this process (SQLite store in a temp dir, judge on),\n"
      "                 generator in a forked child; counts come from the controller's own\n"
      "                 ingest counters\n"
      "  --controller   connect to a running fairwatch-controller (plaintext); counts are\n"
      "                 acknowledged reports; --controller-pid adds its CPU and RSS\n"
      "  --sink         a gRPC server that parses nothing and acknowledges every report:\n"
      "                 what the transport alone costs on this machine (the floor)\n"
      "Example:\n"
      "  build/bin/ingest_load --hosts 10000 --tenants 100 --seconds 30");
  app.add_option("--controller", o.controller, "ADDR of a running controller (plaintext)");
  app.add_option("--controller-pid", o.controller_pid, "its PID, for CPU and RSS (/proc)");
  app.add_option("--hosts", o.hosts, "simulated agents")->check(CLI::Range(1u, 1'000'000u));
  app.add_option("--tenants", o.tenants, "tenants per host")->check(CLI::Range(1u, 10'000u));
  app.add_option("--seconds", o.seconds, "measured seconds after the warm-up")
      ->check(CLI::Range(1u, 86'400u));
  app.add_option("--warmup", o.warmup, "seconds of reporting before measuring");
  app.add_option("--interval-ms", o.interval_ms, "report interval of every agent")
      ->check(CLI::Range(10u, 60'000u));
  app.add_option("--channels", o.channels, "gRPC channels (TCP connections) the streams share")
      ->check(CLI::Range(1u, 10'000u));
  app.add_option("--sender-threads", o.sender_threads, "threads encoding reports")
      ->check(CLI::Range(1u, 64u));
  app.add_option("--connect-window", o.connect_window, "Hellos in flight while connecting")
      ->check(CLI::Range(1u, 100'000u));
  app.add_option("--hog-percent", o.hog_percent,
                 "hosts with a CPU hog (contended: offenders, cases, limit commands)")
      ->check(CLI::Range(0.0, 100.0));
  app.add_flag("--judge,!--no-judge", o.judge, "in-process: run the judge (default on)");
  app.add_flag("--deadlock-detection,!--no-deadlock-detection", o.deadlock_detection,
               "in-process: leave absl::Mutex deadlock detection as the build has it (on in "
               "Debian's debug-mode absl, as in fairwatch-controller); off shows its cost");
  app.add_flag("--stages", o.stages,
               "no gRPC: time each step of a report (parse, ingest, interval, engine, planner) "
               "in one thread; --seconds reports per host after --warmup");
  app.add_flag("--sink", o.sink,
               "measure against a gRPC server that only counts and acknowledges messages "
               "(in a forked child): the transport's cost without any controller work");
  app.add_option("--min-available-mb", o.min_available_mb,
                 "stop when MemAvailable falls below this");
  app.add_option("--log-level", o.log_level, "controller log level (in-process)");
  CLI11_PARSE(app, argc, argv);
  fairwatch::LogLevel level;
  if (!fairwatch::ParseLogLevel(o.log_level, &level)) {
    std::fprintf(stderr, "ingest_load: unknown --log-level %s\n", o.log_level.c_str());
    return 2;
  }
  fairwatch::SetLogLevel(level);
  if (!o.deadlock_detection) absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (absl::Status checked = fairwatch::bench::CheckEncoder(o); !checked.ok()) {
    std::fprintf(stderr, "ingest_load: %s\n", std::string(checked.message()).c_str());
    return 1;
  }
  if (o.stages) return fairwatch::bench::RunStages(o);
  if (o.sink) {
    if (!o.controller.empty()) {
      std::fprintf(stderr, "ingest_load: --sink and --controller exclude each other\n");
      return 2;
    }
    return fairwatch::bench::RunSink(o);
  }
  return o.controller.empty() ? fairwatch::bench::RunInProcess(o) : fairwatch::bench::RunRemote(o);
}

int main(int argc, char** argv) {
  try {
    return RunIngestLoad(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ingest_load: fatal: %s\n", e.what());
    return 1;
  }
}
