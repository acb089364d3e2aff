// Operator API responses as tables and JSON.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fairwatch/v1/operator.pb.h"
#include "google/protobuf/message.h"

namespace fairwatch::cli {

inline constexpr size_t kCgroupsMaxWidth = 60;
inline constexpr int kBarWidthChars = 10;

std::string HostsTable(const v1::ListHostsResponse& response, absl::Time now);
std::string TenantsTable(const v1::ListTenantsResponse& response);
// Columns follow response.resource(): cores for CPU, bytes or ops per second
// for disk, bytes, packets and drops per second for network.
std::string TopTable(const v1::TopResponse& response);
// The whole tenant record: identity, usage and the harm it suffers.
std::string TenantReport(const v1::TenantDetail& detail);

// Cases newest first: id, state, host, tenant, resource, age, last action.
std::string CasesTable(const v1::ListCasesResponse& response, absl::Time now);
// One case as a story: why it was opened, who was harmed, every action and
// what the agent said, and how it ended.
std::string CaseReport(const v1::Case& c);

// Operator actions and the policy in force.
std::string ActionResult(absl::string_view verb, const v1::OperatorActionResponse& response);
std::string ExemptionsTable(const v1::ListExemptionsResponse& response);
std::string PolicyReport(const v1::PolicyView& policy);
std::string AuditTable(const v1::ListAuditResponse& response);

// One line of JSON with every field present (zero values included) and the
// proto's field names, so scripts see stable keys.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);

}  // namespace fairwatch::cli
