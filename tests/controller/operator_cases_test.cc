// The operator API's case queries, without gRPC: errors and contents.
#include <gtest/gtest.h>

#include "controller/operator_service.h"
#include "tests/controller/test_util.h"

namespace fairwatch::controller {
namespace {

using ::fairwatch::controller::testing::TempDir;

TEST(OperatorCases, WithoutAStoreCasesAreUnavailableWithAReason) {
  v1::ListCasesResponse list;
  absl::Status status = ComputeListCases(nullptr, {}, &list);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("without a store"), std::string::npos);
  v1::Case c;
  v1::GetCaseRequest get;
  get.set_case_id(1);
  EXPECT_EQ(ComputeGetCase(nullptr, get, &c).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(OperatorCases, BadRequestsAndUnknownCases) {
  TempDir dir;
  auto store = SqliteStore::Open(dir.Join("c.db"));
  ASSERT_TRUE(store.ok());
  v1::ListCasesRequest too_many;
  too_many.set_limit(kMaxCaseLimit + 1);
  v1::ListCasesResponse list;
  EXPECT_EQ(ComputeListCases(store->get(), too_many, &list).code(),
            absl::StatusCode::kInvalidArgument);
  v1::Case c;
  EXPECT_EQ(ComputeGetCase(store->get(), v1::GetCaseRequest{}, &c).code(),
            absl::StatusCode::kInvalidArgument);
  v1::GetCaseRequest unknown;
  unknown.set_case_id(77);
  EXPECT_EQ(ComputeGetCase(store->get(), unknown, &c).code(), absl::StatusCode::kNotFound);
}

TEST(OperatorCases, ListAndGetReturnWhatTheStoreHolds) {
  TempDir dir;
  auto store = SqliteStore::Open(dir.Join("c.db"));
  ASSERT_TRUE(store.ok());
  for (const char* tenant : {"a", "b", "c"}) {
    v1::Case c;
    c.set_host_id("hv");
    c.set_tenant_id(tenant);
    c.set_resource(v1::RESOURCE_CPU);
    ASSERT_TRUE((*store)->OpenCase(c).ok());
  }
  v1::ListCasesRequest request;
  request.set_limit(2);
  v1::ListCasesResponse list;
  ASSERT_TRUE(ComputeListCases(store->get(), request, &list).ok());
  ASSERT_EQ(list.cases_size(), 2);
  EXPECT_EQ(list.cases(0).tenant_id(), "c");
  v1::GetCaseRequest get;
  get.set_case_id(list.cases(1).case_id());
  v1::Case one;
  ASSERT_TRUE(ComputeGetCase(store->get(), get, &one).ok());
  EXPECT_EQ(one.tenant_id(), "b");
}

}  // namespace
}  // namespace fairwatch::controller
