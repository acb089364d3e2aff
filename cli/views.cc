#include "cli/views.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/format.h"
#include "common/case_names.h"
#include "google/protobuf/util/json_util.h"

namespace fairwatch::cli {
namespace {

// The CAPACITY FROM column of `fairwatch hosts`; `unknown` says why not yet.
std::string CapacityFrom(v1::CapacitySource source, absl::string_view unknown) {
  switch (source) {
    case v1::CAPACITY_CONFIGURED:
      return "configured";
    case v1::CAPACITY_LEARNED:
      return "learned";
    case v1::CAPACITY_LINK_SPEED:
      return "link speed";
    default:
      return std::string(unknown);
  }
}

}  // namespace

std::string HostsTable(const v1::ListHostsResponse& response, absl::Time now) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::HostInfo& host : response.hosts()) {
    rows.push_back({host.host_id(), host.hostname(),
                    FormatHostState(host.connected(), host.last_report_unix_ns(), now),
                    LayoutName(host.layout()), absl::StrCat(host.capacity().cpus()),
                    absl::StrCat(host.tenant_count()), FormatCores(host.cpu_used_cores()),
                    host.agent_version()});
  }
  std::string text = RenderTable({{"HOST"},
                                  {"HOSTNAME"},
                                  {"STATE"},
                                  {"LAYOUT"},
                                  {"CPUS", Align::kRight},
                                  {"TENANTS", Align::kRight},
                                  {"CPU USED", Align::kRight},
                                  {"AGENT"}},
                                 rows);
  // Each disk's capacity and where it comes from (docs/disk.md, "Capacity").
  std::vector<std::vector<std::string>> disks;
  for (const v1::HostInfo& host : response.hosts()) {
    for (const v1::DiskCapacity& d : host.capacity().disks()) {
      disks.push_back(
          {host.host_id(),
           absl::StrCat(d.name(), " (", d.device().major(), ":", d.device().minor(), ")"),
           d.bandwidth_bytes_per_s() > 0 ? FormatBytesRate(d.bandwidth_bytes_per_s()) : "-",
           d.ops_per_s() > 0 ? FormatRate(d.ops_per_s()) : "-", FormatPercent(d.busy_fraction()),
           CapacityFrom(d.source(), "unknown (not busy yet)")});
    }
  }
  if (!disks.empty()) {
    absl::StrAppend(&text, "\n",
                    RenderTable({{"HOST"},
                                 {"DISK"},
                                 {"BANDWIDTH", Align::kRight},
                                 {"OPS", Align::kRight},
                                 {"BUSY", Align::kRight},
                                 {"CAPACITY FROM"}},
                                disks));
  }
  // Each uplink's capacity and where it comes from (docs/network.md, "Capacity").
  std::vector<std::vector<std::string>> uplinks;
  for (const v1::HostInfo& host : response.hosts()) {
    for (const v1::InterfaceCapacity& i : host.capacity().interfaces()) {
      auto rate = [](double r) { return r > 0 ? FormatBytesRate(r) : std::string("-"); };
      // Watched for saturation only while its capacity is to be learned.
      const bool watched =
          i.source() == v1::CAPACITY_LEARNED || i.source() == v1::CAPACITY_SOURCE_UNSPECIFIED;
      uplinks.push_back({host.host_id(), i.name(), rate(i.rx_bytes_per_s()),
                         rate(i.tx_bytes_per_s()), watched ? (i.saturated() ? "yes" : "no") : "-",
                         CapacityFrom(i.source(), "unknown (not saturated yet)")});
    }
  }
  if (!uplinks.empty()) {
    absl::StrAppend(&text, "\n",
                    RenderTable({{"HOST"},
                                 {"UPLINK"},
                                 {"RX", Align::kRight},
                                 {"TX", Align::kRight},
                                 {"SATURATED"},
                                 {"CAPACITY FROM"}},
                                uplinks));
  }
  return text;
}

std::string TenantsTable(const v1::ListTenantsResponse& response) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::TenantInfo& info : response.tenants()) {
    const v1::Tenant& tenant = info.tenant();
    rows.push_back({info.host_id(), tenant.id(), tenant.name(), SourceName(tenant.source()),
                    tenant.account(), FormatWeight(tenant.weight()),
                    FormatCgroups(tenant.cgroups(), kCgroupsMaxWidth)});
  }
  return RenderTable({{"HOST"},
                      {"TENANT"},
                      {"NAME"},
                      {"SOURCE"},
                      {"ACCOUNT"},
                      {"WEIGHT", Align::kRight},
                      {"CGROUPS"}},
                     rows);
}

std::string TopTable(const v1::TopResponse& response) {
  const v1::Resource resource =
      response.resource() == v1::RESOURCE_UNSPECIFIED ? v1::RESOURCE_CPU : response.resource();
  std::vector<Column> columns{{"HOST"}, {"TENANT"}};
  switch (resource) {
    case v1::RESOURCE_DISK_BANDWIDTH:
      columns.insert(columns.end(), {{"READ", Align::kRight}, {"WRITE", Align::kRight}});
      break;
    case v1::RESOURCE_DISK_IOPS:
      columns.insert(columns.end(), {{"READ OPS", Align::kRight}, {"WRITE OPS", Align::kRight}});
      break;
    case v1::RESOURCE_NET_RX:
    case v1::RESOURCE_NET_TX:
      columns.insert(columns.end(),
                     {{"RX", Align::kRight}, {"TX", Align::kRight}, {"DROPS", Align::kRight}});
      break;
    default:
      columns.push_back({"CPU", Align::kRight});
  }
  // The id last: a VM's UUID is long, and names are what people scan for.
  columns.insert(columns.end(),
                 {{"% HOST", Align::kRight}, {""}, {"WINDOW", Align::kRight}, {"ID"}});

  std::vector<std::vector<std::string>> rows;
  for (const v1::TopRow& row : response.rows()) {
    std::vector<std::string> cells{row.host_id(),
                                   row.tenant_name().empty() ? row.tenant_id() : row.tenant_name()};
    switch (resource) {
      case v1::RESOURCE_DISK_BANDWIDTH:
        cells.push_back(FormatBytesRate(row.disk_read_bytes_per_s()));
        cells.push_back(FormatBytesRate(row.disk_write_bytes_per_s()));
        break;
      case v1::RESOURCE_DISK_IOPS:
        cells.push_back(FormatRate(row.disk_read_ops_per_s()));
        cells.push_back(FormatRate(row.disk_write_ops_per_s()));
        break;
      case v1::RESOURCE_NET_RX:
      case v1::RESOURCE_NET_TX:
        cells.push_back(FormatBytesRate(row.net_rx_bytes_per_s()));
        cells.push_back(FormatBytesRate(row.net_tx_bytes_per_s()));
        cells.push_back(FormatRate(row.net_drops_per_s()));
        break;
      default:
        cells.push_back(FormatCores(row.cpu_cores()));
    }
    // The share is unknown (not zero) when the host's capacity for it is.
    const double share =
        resource == v1::RESOURCE_CPU ? row.cpu_host_fraction() : row.host_fraction();
    const bool known = resource == v1::RESOURCE_CPU || row.host_fraction() > 0 || row.value() == 0;
    cells.push_back(known ? FormatPercent(share) : "-");
    cells.push_back(RenderBar(share, kBarWidthChars));
    cells.push_back(FormatSeconds(row.window_s()));
    cells.push_back(row.tenant_id());
    rows.push_back(std::move(cells));
  }
  return RenderTable(columns, rows);
}

std::string TenantReport(const v1::TenantDetail& detail) {
  const v1::Tenant& tenant = detail.info().tenant();
  const v1::TopRow& use = detail.usage();
  const v1::HarmSignals& harm = detail.harm();
  std::string text = absl::StrCat("tenant   ", tenant.id());
  if (!tenant.name().empty() && tenant.name() != tenant.id()) {
    absl::StrAppend(&text, " (", tenant.name(), ")");
  }
  absl::StrAppend(&text, "\nhost     ", detail.info().host_id(), "\nsource   ",
                  SourceName(tenant.source()), ", weight ", FormatWeight(tenant.weight()),
                  tenant.account().empty() ? "" : absl::StrCat(", account ", tenant.account()),
                  "\ncgroups  ", FormatCgroups(tenant.cgroups(), 200), "\n");
  if (use.window_s() <= 0) {
    absl::StrAppend(&text, "\nno rates yet: the controller needs two reports of this tenant\n");
    return text;
  }
  absl::StrAppend(&text, "\nusage over ", FormatSeconds(use.window_s()), "\n");
  std::vector<std::vector<std::string>> usage_rows = {
      {"cpu", absl::StrCat(FormatCores(use.cpu_cores()), " cores"),
       absl::StrCat(FormatPercent(use.cpu_host_fraction()), " of host")},
      {"disk",
       absl::StrCat("read ", FormatBytesRate(use.disk_read_bytes_per_s()), ", write ",
                    FormatBytesRate(use.disk_write_bytes_per_s())),
       absl::StrCat(FormatRate(use.disk_read_ops_per_s() + use.disk_write_ops_per_s()), " ops")},
      {"net",
       absl::StrCat("rx ", FormatBytesRate(use.net_rx_bytes_per_s()), ", tx ",
                    FormatBytesRate(use.net_tx_bytes_per_s())),
       absl::StrCat(FormatRate(use.net_rx_packets_per_s() + use.net_tx_packets_per_s()),
                    " packets")}};
  absl::StrAppend(&text, RenderTable({{"  "}, {""}, {""}}, usage_rows));

  if (detail.window_s() <= 0) return text;
  absl::StrAppend(&text, "\nharm signals over ", FormatSeconds(detail.window_s()), "\n");
  auto pressure = [](bool present, double fraction) {
    return present ? absl::StrCat("some ", FormatPercent(fraction)) : std::string("n/a");
  };
  std::vector<std::vector<std::string>> harm_rows = {
      !harm.runq_untraced()
          ? std::vector<std::string>{"run-queue wait",
                                     absl::StrCat("p50 ", FormatNanos(harm.runq_wait_p50_ns()),
                                                  ", p99 ", FormatNanos(harm.runq_wait_p99_ns())),
                                     absl::StrCat(FormatRate(harm.runq_waits_per_s()), " waits, ",
                                                  FormatNanos(harm.runq_wait_ns_per_s()),
                                                  "/s waited")}
          : std::vector<std::string>{"run-queue wait", "not traced",
                                     "host not contended (agent probes.runq_tracing)"},
      {"cpu pressure", pressure(harm.cpu_psi_present(), harm.cpu_psi_some_fraction()), ""},
      {"io pressure", pressure(harm.io_psi_present(), harm.io_psi_some_fraction()), ""},
      {"own cpu quota", absl::StrCat("throttled ", FormatNanos(harm.throttled_ns_per_s()), "/s"),
       absl::StrCat(FormatPercent(harm.throttled_periods_fraction()), " of periods")},
      {"io latency",
       absl::StrCat("p50 ", FormatNanos(harm.io_latency_p50_ns()), ", p99 ",
                    FormatNanos(harm.io_latency_p99_ns())),
       ""},
      {"net drops", FormatRate(harm.net_drops_per_s()), ""},
      {"tcp retransmits",
       harm.tcp_present() ? FormatRate(harm.tcp_retransmits_per_s()) : std::string("n/a"),
       harm.tcp_present() ? "segments (its network namespace)" : ""}};
  absl::StrAppend(&text, RenderTable({{"  "}, {""}, {""}}, harm_rows));

  if (detail.disks_size() > 0) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& d : detail.disks()) {
      rows.push_back({absl::StrCat(d.device().major(), ":", d.device().minor()),
                      FormatBytesRate(d.read_bytes_per_s()), FormatBytesRate(d.write_bytes_per_s()),
                      FormatRate(d.read_ops_per_s()), FormatRate(d.write_ops_per_s()),
                      FormatNanos(d.latency_p50_ns()), FormatNanos(d.latency_p99_ns())});
    }
    absl::StrAppend(&text, "\n",
                    RenderTable({{"DEVICE"},
                                 {"READ", Align::kRight},
                                 {"WRITE", Align::kRight},
                                 {"R OPS", Align::kRight},
                                 {"W OPS", Align::kRight},
                                 {"P50", Align::kRight},
                                 {"P99", Align::kRight}},
                                rows));
  }
  if (detail.interfaces_size() > 0) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& i : detail.interfaces()) {
      rows.push_back({i.interface().empty() ? "(cgroup)" : i.interface(),
                      FormatBytesRate(i.rx_bytes_per_s()), FormatBytesRate(i.tx_bytes_per_s()),
                      FormatRate(i.rx_packets_per_s()), FormatRate(i.tx_packets_per_s()),
                      FormatRate(i.rx_drops_per_s() + i.tx_drops_per_s())});
    }
    absl::StrAppend(&text, "\n",
                    RenderTable({{"INTERFACE"},
                                 {"RX", Align::kRight},
                                 {"TX", Align::kRight},
                                 {"RX PKTS", Align::kRight},
                                 {"TX PKTS", Align::kRight},
                                 {"DROPS", Align::kRight}},
                                rows));
  }
  return text;
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("encoding ", message.GetTypeName(), " as JSON: ", status.ToString()));
  }
  return json;
}

namespace {

std::string AckLabel(const v1::CaseAction& a) {
  switch (a.ack()) {
    case v1::ACK_STATE_PENDING:
      return "pending";
    case v1::ACK_STATE_APPLIED:
      return "applied";
    case v1::ACK_STATE_FAILED:
      return "failed";
    case v1::ACK_STATE_NOT_SENT:
      return a.dry_run() ? "dry run" : "not sent";
    default:
      return "-";
  }
}

std::string ActionSummary(const v1::CaseAction& a, v1::Resource resource) {
  std::string text = std::string(ActionKindName(a.kind()));
  if (a.limit() > 0) absl::StrAppend(&text, " ", FormatAmount(a.limit(), resource));
  if (a.weight() > 0) absl::StrAppend(&text, " weight ", FormatPercent(a.weight()));
  absl::StrAppend(&text, " (", AckLabel(a), ")");
  return text;
}

absl::Time FromNanos(int64_t ns) { return absl::FromUnixNanos(ns); }

// "caused 82 % of web's run-queue wait (who held the CPU while it waited, ...)".
std::string CausedLine(const v1::HarmedTenant& h, v1::Resource r) {
  if (h.measured()) {
    return absl::StrCat("caused ", FormatPercent(h.caused_share()), " of ", h.tenant_id(),
                        "'s run-queue wait (who held the CPU while it waited, measured in the "
                        "kernel)");
  }
  const char* what = r == v1::RESOURCE_CPU                                             ? "CPU"
                     : r == v1::RESOURCE_DISK_BANDWIDTH || r == v1::RESOURCE_DISK_IOPS ? "disk"
                                                                                       : "network";
  return absl::StrCat("did ", FormatPercent(h.caused_share()), " of the host's ", what,
                      " use while ", h.tenant_id(), " waited");
}

// What the interval an action answered showed: "host 1.98 of 2.00 cores, it
// 1.15; web 0.40 of 0.40 ok; db 0.31 of 0.45 harmed: run-queue wait p99 ...".
// Read down the actions, each line is the effect of the one above it.
std::string SeenLine(const v1::ActionContext& seen, v1::Resource r) {
  if (seen.report_seq() == 0) return "-";
  std::string text =
      absl::StrCat("host ", FormatAmount(seen.host_usage(), r), " of ",
                   FormatAmount(seen.capacity(), r), ", it ", FormatAmount(seen.tenant_usage(), r));
  for (const v1::NeighbourSeen& n : seen.neighbours()) {
    absl::StrAppend(&text, "; ", n.tenant_id(), " ", FormatAmount(n.usage(), r), " of ",
                    FormatAmount(n.wants(), r), n.suffering() ? " harmed" : " ok");
    if (n.suffering() && !n.evidence().empty()) {
      absl::StrAppend(&text, ": ", absl::StrJoin(n.evidence(), ", "));
    }
  }
  return text;
}

}  // namespace

std::string CasesTable(const v1::ListCasesResponse& response, absl::Time now) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::Case& c : response.cases()) {
    const bool open = c.state() == v1::CASE_STATE_OPEN;
    std::string state = open ? "open" : "closed";
    if (c.dry_run()) absl::StrAppend(&state, " (dry run)");
    const absl::Time opened = FromNanos(c.opened_unix_ns());
    rows.push_back(
        {absl::StrCat(c.case_id()), state, c.host_id(),
         c.tenant_name().empty() ? c.tenant_id() : c.tenant_name(), ResourceName(c.resource()),
         absl::StrCat(FormatCoarseDuration(now - opened), " ago"), absl::StrCat(c.actions_size()),
         c.actions().empty() ? "-" : ActionSummary(*c.actions().rbegin(), c.resource())});
  }
  return RenderTable({{"CASE", Align::kRight},
                      {"STATE"},
                      {"HOST"},
                      {"TENANT"},
                      {"RESOURCE"},
                      {"OPENED", Align::kRight},
                      {"ACTIONS", Align::kRight},
                      {"LAST ACTION"}},
                     rows);
}

std::string CaseReport(const v1::Case& c) {
  const v1::CaseEvidence& e = c.opening();
  const v1::Resource r = c.resource();
  std::string text = absl::StrCat(
      "case     ", c.case_id(), c.state() == v1::CASE_STATE_OPEN ? " (open)" : " (closed)",
      c.dry_run() ? ", dry run: nothing was sent" : "", "\ntenant   ",
      c.tenant_name().empty() ? c.tenant_id() : c.tenant_name(),
      c.tenant_name().empty() || c.tenant_name() == c.tenant_id()
          ? ""
          : absl::StrCat(" (", c.tenant_id(), ")"),
      " on host ", c.host_id(), "\nresource ", ResourceName(r), "\nopened   ",
      FormatTimestampUtc(FromNanos(c.opened_unix_ns())), " by ", c.opened_by(), "\n\nwhy\n");
  absl::StrAppend(&text, "  it used ", FormatAmount(e.usage(), r), " of the host's ",
                  FormatAmount(e.capacity(), r), " (host total ", FormatAmount(e.host_usage(), r),
                  e.contended() ? ", contended" : "", ")\n  its fair share was ",
                  FormatAmount(e.fair_share(), r), " and its entitlement ",
                  FormatAmount(e.entitled_share(), r), "\n  flagged in ", e.flagged_intervals(),
                  " recent intervals; it caused ", FormatPercent(e.blame()),
                  " of the neighbours' waiting that offenders caused on the host\n");
  if (e.harmed().empty()) {
    absl::StrAppend(&text, "  no neighbour showed harm\n");
  }
  for (const v1::HarmedTenant& h : e.harmed()) {
    absl::StrAppend(&text, "  neighbour ", h.tenant_id(),
                    " was harmed: ", absl::StrJoin(h.evidence(), "; "), "\n");
    if (h.caused_share() > 0) {
      absl::StrAppend(&text, "    ", CausedLine(h, r), "\n");
    }
  }
  absl::StrAppend(&text, "\nactions\n");
  std::vector<std::vector<std::string>> rows;
  for (const v1::CaseAction& a : c.actions()) {
    std::string ack = AckLabel(a);
    // A weight-only action's ack reads back the weight, as a fraction.
    const bool weight_only = a.weight() > 0 && a.limit() == 0;
    if (a.has_in_effect()) {
      absl::StrAppend(&ack, ", in effect ",
                      weight_only         ? absl::StrCat("weight ", FormatPercent(a.in_effect()))
                      : a.in_effect() > 0 ? FormatAmount(a.in_effect(), r)
                                          : "no limit");
    }
    if (!a.ack_message().empty()) absl::StrAppend(&ack, ": ", a.ack_message());
    std::string levers = a.limit() > 0 ? FormatAmount(a.limit(), r) : "";
    if (a.weight() > 0) {
      absl::StrAppend(&levers, levers.empty() ? "" : " + ", "weight ", FormatPercent(a.weight()));
    }
    rows.push_back({FormatTimestampUtc(FromNanos(a.at_unix_ns())),
                    std::string(ActionKindName(a.kind())), levers.empty() ? "-" : levers,
                    a.lease_expires_unix_ns() > 0
                        ? FormatTimestampUtc(FromNanos(a.lease_expires_unix_ns()))
                        : "-",
                    a.decided_by(), ack, a.reason(), SeenLine(a.seen(), r)});
  }
  absl::StrAppend(&text, RenderTable({{"AT"},
                                      {"ACTION"},
                                      {"LIMIT", Align::kRight},
                                      {"LEASE UNTIL"},
                                      {"BY"},
                                      {"AGENT"},
                                      {"REASON"},
                                      {"SEEN (host, tenant, neighbours: use of want)"}},
                                     rows));
  if (c.state() == v1::CASE_STATE_CLOSED) {
    absl::StrAppend(&text, "\nclosed   ", FormatTimestampUtc(FromNanos(c.closed_unix_ns())), ": ",
                    c.close_reason(), "\n");
  }
  return text;
}

std::string ActionResult(absl::string_view verb, const v1::OperatorActionResponse& response) {
  std::string text;
  for (const v1::Case& c : response.cases()) {
    const v1::CaseAction* last = c.actions().empty() ? nullptr : &*c.actions().rbegin();
    absl::StrAppend(&text, verb, " ", c.tenant_name().empty() ? c.tenant_id() : c.tenant_name(),
                    " on ", c.host_id(), ", ", ResourceName(c.resource()));
    if (last != nullptr && last->limit() > 0) {
      absl::StrAppend(&text, " at ", FormatAmount(last->limit(), c.resource()));
    }
    absl::StrAppend(&text, ": case ", c.case_id(),
                    c.state() == v1::CASE_STATE_OPEN ? " (open)" : " (closed)");
    if (last != nullptr) absl::StrAppend(&text, ", agent: ", AckLabel(*last));
    absl::StrAppend(&text, "\n");
  }
  return text;
}

namespace {

std::string ExemptionTarget(const v1::Exemption& e) {
  if (!e.account().empty()) return absl::StrCat("account ", e.account());
  std::string tenant = e.tenant_name().empty() || e.tenant_name() == e.tenant_id()
                           ? e.tenant_id()
                           : absl::StrCat(e.tenant_name(), " (", e.tenant_id(), ")");
  return e.host_id().empty() ? tenant : absl::StrCat(tenant, " on ", e.host_id());
}

}  // namespace

std::string ExemptionsTable(const v1::ListExemptionsResponse& response) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::Exemption& e : response.exemptions()) {
    rows.push_back(
        {e.exemption_id() == 0 ? "config" : absl::StrCat(e.exemption_id()), ExemptionTarget(e),
         e.created_by(),
         e.created_unix_ns() > 0 ? FormatTimestampUtc(FromNanos(e.created_unix_ns())) : "-",
         e.removed_unix_ns() > 0
             ? absl::StrCat("removed by ", e.removed_by(), ": ", e.removed_reason())
             : "in force",
         e.reason()});
  }
  return RenderTable({{"ID", Align::kRight}, {"EXEMPT"}, {"BY"}, {"SINCE"}, {"STATE"}, {"REASON"}},
                     rows);
}

std::string PolicyReport(const v1::PolicyView& policy) {
  const v1::FairnessPolicy& p = policy.configured();
  const v1::ActionPolicy& a = p.actions();
  const v1::HarmPolicy& h = p.harm();
  std::vector<std::string> dry;
  for (int r : policy.dry_run_resources())
    dry.push_back(ResourceName(static_cast<v1::Resource>(r)));
  std::string text =
      absl::StrCat("dry run     ",
                   policy.dry_run() ? "on for every resource: cases are recorded, no limit is sent"
                   : !dry.empty()   ? absl::StrCat("on for ", absl::StrJoin(dry, ", "))
                                    : "off: limits are sent to agents",
                   "\n");
  if (policy.has_last_change()) {
    const v1::PolicyChange& c = policy.last_change();
    absl::StrAppend(&text, "            set by ", c.changed_by(), " at ",
                    FormatTimestampUtc(FromNanos(c.at_unix_ns())), ": ", c.reason(), "\n");
  } else {
    absl::StrAppend(&text, "            as configured (", p.dry_run() ? "on" : "off", ")\n");
  }
  absl::StrAppend(
      &text, "\noffender    above its entitlement by more than ", FormatPercent(p.tolerance()),
      ", and over its fair share and the cause of at least ", FormatPercent(p.min_blame()),
      " of a victim's waiting, or the cause of at least ", FormatPercent(p.dominant_blame()),
      " of it; in ", p.required_intervals(), " of ", p.window_intervals(), " intervals\n",
      "victim      harm signals up, wanting no more than its fair share (or getting less), at "
      "least ",
      FormatPercent(p.min_neighbour_share()),
      " of its waiting caused by other tenants (CPU: who held the CPU, measured), not held back "
      "by fairwatch, seen for ",
      p.window_intervals(), " intervals\n", "harm        a signal above ",
      FormatDecimal(h.ratio(), 2),
      "x the tenant's own baseline and above its detector's floor (below); CPU not while "
      "throttled by its own quota over ",
      FormatPercent(h.self_throttled_fraction()), " of the time\n",
      "actions     CPU: weight first; a cap leaves the neighbours what they need + ",
      FormatPercent(a.headroom()), " of capacity; below it x", FormatDecimal(a.step_down(), 3),
      " every ", FormatSeconds(a.step_interval_ms() / 1e3),
      " while harm persists (a neighbour harmed in ", FormatPercent(a.step_down_harmed_fraction()),
      " of the intervals since the last step) and each step lowers it by ",
      FormatPercent(a.min_improvement()), ", floor ", FormatPercent(a.floor_fraction()),
      " of entitlement; x", FormatDecimal(a.step_up(), 3), " up to that after ",
      FormatSeconds(a.quiet_period_ms() / 1e3), " quiet\n", "            released once under ",
      FormatPercent(a.release_below_fraction()), " of its limit for the quiet period\n",
      "            lease ", FormatSeconds(a.lease_ms() / 1e3), ", cool-down ",
      FormatSeconds(a.cooldown_ms() / 1e3), ", at most ", FormatPercent(a.max_limited_fraction()),
      " of a host's tenants limited at once\n");
  if (!policy.detectors().empty()) {
    std::vector<std::vector<std::string>> rows;
    for (const v1::HarmDetectorView& d : policy.detectors()) {
      std::vector<std::string> resources;
      for (int r : d.resources()) resources.push_back(ResourceName(static_cast<v1::Resource>(r)));
      rows.push_back({d.name(), d.enabled() ? "on" : "off", absl::StrJoin(resources, ","),
                      d.floor_text(), d.help()});
    }
    absl::StrAppend(
        &text, "\nharm detectors (off in the config file: harm.disabled_detectors)\n",
        RenderTable({{"DETECTOR"}, {"STATE"}, {"JUDGES"}, {"FLOOR"}, {"SIGNAL"}}, rows));
  }
  v1::ListExemptionsResponse exemptions;
  *exemptions.mutable_exemptions() = policy.exemptions();
  absl::StrAppend(&text, "\nexemptions\n",
                  policy.exemptions().empty() ? "  none\n" : ExemptionsTable(exemptions));
  return text;
}

std::string AuditTable(const v1::ListAuditResponse& response) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::AuditEntry& e : response.entries()) {
    rows.push_back({absl::StrCat(e.entry_id()), FormatTimestampUtc(FromNanos(e.at_unix_ns())),
                    e.operator_name().empty() ? "-" : e.operator_name(), e.action(), e.target(),
                    e.ok() ? "ok" : "refused", e.result(), e.reason()});
  }
  return RenderTable({{"ID", Align::kRight},
                      {"AT"},
                      {"OPERATOR"},
                      {"ACTION"},
                      {"TARGET"},
                      {"RESULT"},
                      {"DETAIL"},
                      {"REASON"}},
                     rows);
}

}  // namespace fairwatch::cli
