// Cases in the SQLite store: round trips, rules, and durability when the
// writing process is killed with SIGKILL mid-write.
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <set>
#include <thread>

#include "controller/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/controller/test_util.h"

namespace fairwatch::controller {
namespace {

using ::fairwatch::controller::testing::TempDir;
using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

v1::CaseAction Action(v1::ActionKind kind, double limit, int at_s) {
  v1::CaseAction a;
  a.set_kind(kind);
  a.set_limit(limit);
  a.set_at_unix_ns(absl::ToUnixNanos(kT0 + absl::Seconds(at_s)));
  a.set_lease_expires_unix_ns(absl::ToUnixNanos(kT0 + absl::Seconds(at_s + 30)));
  a.set_reason("using 1.60 cores of 2.00 cores, above its fair share 1.00 cores");
  a.set_decided_by("policy");
  a.set_ack(v1::ACK_STATE_PENDING);
  return a;
}

v1::Case NewCase(const std::string& host, const std::string& tenant,
                 v1::Resource resource = v1::RESOURCE_CPU) {
  v1::Case c;
  c.set_host_id(host);
  c.set_tenant_id(tenant);
  c.set_tenant_name(tenant + "-name");
  c.set_resource(resource);
  c.set_opened_unix_ns(absl::ToUnixNanos(kT0));
  c.set_opened_by("policy");
  v1::CaseEvidence* e = c.mutable_opening();
  e->set_report_seq(42);
  e->set_usage(1.6);
  e->set_fair_share(1.0);
  e->set_entitled_share(1.0);
  e->set_capacity(2);
  e->set_host_usage(2.0);
  e->set_contended(true);
  e->set_flagged_intervals(3);
  e->set_blame(1.0);
  v1::HarmedTenant* h = e->add_harmed();
  h->set_tenant_id("victim");
  h->add_evidence("run-queue wait p99 8.4 ms (baseline 0.9 ms)");
  *c.add_actions() = Action(v1::ACTION_KIND_LIMIT, 1.1, 0);
  return c;
}

std::unique_ptr<SqliteStore> OpenOrDie(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(path);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

TEST(CaseStore, ACaseIsStoredWithItsEvidenceActionsAndAcksAndSurvivesReopen) {
  TempDir dir;
  const std::string path = dir.Join("c.db");
  uint64_t id = 0;
  {
    auto store = OpenOrDie(path);
    absl::StatusOr<v1::Case> opened = store->OpenCase(NewCase("hv", "hog"));
    ASSERT_TRUE(opened.ok()) << opened.status();
    id = opened->case_id();
    EXPECT_GT(id, 0u);
    ASSERT_EQ(opened->actions_size(), 1);
    const uint64_t first_action = opened->actions(0).action_id();
    EXPECT_GT(first_action, 0u);
    ASSERT_TRUE(
        store
            ->RecordAck(first_action, v1::ACK_STATE_APPLIED, "", 1.1, kT0 + absl::Milliseconds(300))
            .ok());
    v1::CaseAction down = Action(v1::ACTION_KIND_STEP_DOWN, 0.88, 5);
    down.mutable_seen()->set_report_seq(47);
    down.mutable_seen()->set_host_usage(1.98);
    v1::NeighbourSeen* n = down.mutable_seen()->add_neighbours();
    n->set_tenant_id("victim");
    n->set_suffering(true);
    n->add_evidence("run-queue wait p99 4.1 ms (baseline 0.9 ms)");
    absl::StatusOr<v1::CaseAction> step = store->AddAction(id, down);
    ASSERT_TRUE(step.ok()) << step.status();
    EXPECT_GT(step->action_id(), first_action);
    ASSERT_TRUE(store->CloseCase(id, "no neighbour harmed for 10s", kT0 + absl::Seconds(75)).ok());
  }
  auto store = OpenOrDie(path);
  absl::StatusOr<v1::Case> c = store->GetCase(id);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state(), v1::CASE_STATE_CLOSED);
  EXPECT_EQ(c->host_id(), "hv");
  EXPECT_EQ(c->tenant_name(), "hog-name");
  EXPECT_EQ(c->resource(), v1::RESOURCE_CPU);
  EXPECT_EQ(c->close_reason(), "no neighbour harmed for 10s");
  EXPECT_EQ(c->closed_unix_ns(), absl::ToUnixNanos(kT0 + absl::Seconds(75)));
  EXPECT_EQ(c->opening().report_seq(), 42u);
  ASSERT_EQ(c->opening().harmed_size(), 1);
  EXPECT_EQ(c->opening().harmed(0).evidence(0), "run-queue wait p99 8.4 ms (baseline 0.9 ms)");
  ASSERT_EQ(c->actions_size(), 2);
  EXPECT_EQ(c->actions(0).kind(), v1::ACTION_KIND_LIMIT);
  EXPECT_EQ(c->actions(0).ack(), v1::ACK_STATE_APPLIED);
  ASSERT_TRUE(c->actions(0).has_in_effect());
  EXPECT_DOUBLE_EQ(c->actions(0).in_effect(), 1.1);
  EXPECT_FALSE(c->actions(1).has_in_effect()) << "not acknowledged";
  EXPECT_DOUBLE_EQ(c->actions(1).limit(), 0.88);
  EXPECT_FALSE(c->actions(0).has_seen());
  EXPECT_EQ(c->actions(1).seen().report_seq(), 47u) << "what the interval it answered showed";
  ASSERT_EQ(c->actions(1).seen().neighbours_size(), 1);
  EXPECT_EQ(c->actions(1).seen().neighbours(0).evidence(0),
            "run-queue wait p99 4.1 ms (baseline 0.9 ms)");
  EXPECT_EQ(c->actions(1).ack(), v1::ACK_STATE_PENDING);
}

TEST(CaseStore, RulesAreEnforcedWithClearErrors) {
  TempDir dir;
  auto store = OpenOrDie(dir.Join("c.db"));
  absl::StatusOr<v1::Case> c = store->OpenCase(NewCase("hv", "hog"));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(store->AddAction(999, Action(v1::ACTION_KIND_RENEW, 1, 1)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store->RecordAck(999, v1::ACK_STATE_FAILED, "x", std::nullopt, kT0).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(store->CloseCase(c->case_id(), "released", kT0).ok());
  absl::Status twice = store->CloseCase(c->case_id(), "again", kT0);
  EXPECT_EQ(twice.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(twice.message(), HasSubstr("not open"));
  EXPECT_EQ(store->AddAction(c->case_id(), Action(v1::ACTION_KIND_RENEW, 1, 1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->GetCase(12345).status().code(), absl::StatusCode::kNotFound);
  v1::Case anonymous = NewCase("", "hog");
  EXPECT_EQ(store->OpenCase(anonymous).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CaseStore, ListFiltersByStateHostAndTenantNewestFirst) {
  TempDir dir;
  auto store = OpenOrDie(dir.Join("c.db"));
  std::vector<uint64_t> ids;
  for (const auto& [host, tenant] : std::vector<std::pair<std::string, std::string>>{
           {"hv1", "a"}, {"hv1", "b"}, {"hv2", "a"}, {"hv2", "c"}}) {
    ids.push_back(store->OpenCase(NewCase(host, tenant))->case_id());
  }
  ASSERT_TRUE(store->CloseCase(ids[1], "released", kT0).ok());
  auto list = [&](const CaseFilter& f) {
    std::vector<uint64_t> got;
    absl::StatusOr<std::vector<v1::Case>> cases = store->ListCases(f);
    EXPECT_TRUE(cases.ok()) << cases.status();
    if (cases.ok()) {
      for (const auto& c : *cases) got.push_back(c.case_id());
    }
    return got;
  };
  EXPECT_EQ(list({}), (std::vector<uint64_t>{ids[3], ids[2], ids[1], ids[0]}));
  CaseFilter open;
  open.open_only = true;
  EXPECT_EQ(list(open), (std::vector<uint64_t>{ids[3], ids[2], ids[0]}));
  CaseFilter host;
  host.host_id = "hv1";
  EXPECT_EQ(list(host), (std::vector<uint64_t>{ids[1], ids[0]}));
  CaseFilter tenant;
  tenant.tenant_id = "a";
  EXPECT_EQ(list(tenant), (std::vector<uint64_t>{ids[2], ids[0]}));
  CaseFilter two;
  two.limit = 2;
  EXPECT_EQ(list(two), (std::vector<uint64_t>{ids[3], ids[2]}));
  absl::StatusOr<std::vector<v1::Case>> everything = store->ListCases({});
  ASSERT_TRUE(everything.ok());
  for (const auto& c : *everything) EXPECT_EQ(c.actions_size(), 1);
}

// A child writes cases and actions as fast as it can and reports each one on
// a pipe only after the store returned OK; the parent kills it with SIGKILL
// at a random moment. Everything reported must be there after reopening, and
// the database must pass its integrity check.
TEST(CaseStore, SigkillMidWriteLosesNothingAcknowledgedAndCorruptsNothing) {
  TempDir dir;
  const std::string path = dir.Join("kill.db");
  OpenOrDie(path);  // schema created once, outside the loop
  std::mt19937 random(12345);
  std::set<uint64_t> acknowledged_cases;
  std::set<uint64_t> acknowledged_actions;
  for (int round = 0; round < 8; ++round) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      close(fds[0]);
      absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(path);
      if (!store.ok()) _exit(2);
      for (int i = 0;; ++i) {
        absl::StatusOr<v1::Case> c = (*store)->OpenCase(
            NewCase("hv", "t" + std::to_string(round) + "-" + std::to_string(i)));
        if (!c.ok()) _exit(3);
        uint64_t record[2] = {c->case_id(), c->actions(0).action_id()};
        if (write(fds[1], record, sizeof(record)) != sizeof(record)) _exit(4);
        absl::StatusOr<v1::CaseAction> a =
            (*store)->AddAction(c->case_id(), Action(v1::ACTION_KIND_STEP_DOWN, 0.9, 5));
        if (!a.ok()) _exit(5);
        record[1] = a->action_id();
        if (write(fds[1], record, sizeof(record)) != sizeof(record)) _exit(4);
      }
    }
    close(fds[1]);
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(30, 250)(random)));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer stopped by itself: " << status;
    uint64_t record[2];
    while (read(fds[0], record, sizeof(record)) == sizeof(record)) {
      acknowledged_cases.insert(record[0]);
      acknowledged_actions.insert(record[1]);
    }
    close(fds[0]);
  }
  ASSERT_GT(acknowledged_cases.size(), 8u) << "the writer hardly wrote anything";

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* check = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &check, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(check), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(check, 0)), "ok");
  sqlite3_finalize(check);
  sqlite3_close(db);

  auto store = OpenOrDie(path);
  CaseFilter all;
  all.limit = 0;
  absl::StatusOr<std::vector<v1::Case>> cases = store->ListCases(all);
  ASSERT_TRUE(cases.ok()) << cases.status();
  std::set<uint64_t> stored_cases, stored_actions;
  for (const auto& c : *cases) {
    stored_cases.insert(c.case_id());
    for (const auto& a : c.actions()) stored_actions.insert(a.action_id());
  }
  for (uint64_t id : acknowledged_cases) EXPECT_TRUE(stored_cases.contains(id)) << "case " << id;
  for (uint64_t id : acknowledged_actions) {
    EXPECT_TRUE(stored_actions.contains(id)) << "action " << id;
  }
  std::cout << acknowledged_cases.size() << " cases and " << acknowledged_actions.size()
            << " actions acknowledged across 8 kills; all present, integrity ok\n";
}

}  // namespace
}  // namespace fairwatch::controller
