#include "cli/views.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/format.h"
#include "google/protobuf/util/json_util.h"

namespace fairwatch::cli {

std::string HostsTable(const v1::ListHostsResponse& response, absl::Time now) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::HostInfo& host : response.hosts()) {
    rows.push_back({host.host_id(), host.hostname(),
                    FormatHostState(host.connected(), host.last_report_unix_ns(), now),
                    LayoutName(host.layout()), absl::StrCat(host.capacity().cpus()),
                    absl::StrCat(host.tenant_count()), FormatCores(host.cpu_used_cores()),
                    host.agent_version()});
  }
  return RenderTable({{"HOST"},
                      {"HOSTNAME"},
                      {"STATE"},
                      {"LAYOUT"},
                      {"CPUS", Align::kRight},
                      {"TENANTS", Align::kRight},
                      {"CPU USED", Align::kRight},
                      {"AGENT"}},
                     rows);
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
  std::vector<std::vector<std::string>> rows;
  for (const v1::TopRow& row : response.rows()) {
    rows.push_back({row.host_id(), row.tenant_name().empty() ? row.tenant_id() : row.tenant_name(),
                    FormatCores(row.cpu_cores()), FormatPercent(row.cpu_host_fraction()),
                    RenderBar(row.cpu_host_fraction(), kBarWidthChars),
                    FormatSeconds(row.window_s())});
  }
  return RenderTable({{"HOST"},
                      {"TENANT"},
                      {"CPU", Align::kRight},
                      {"% HOST", Align::kRight},
                      {""},
                      {"WINDOW", Align::kRight}},
                     rows);
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

}  // namespace fairwatch::cli
