// The decision loop end to end in one process: reports into a real fleet
// state, the engine and planner, cases in a real SQLite store, commands out
// through a recording send function, acknowledgements back.
#include "controller/judge.h"

#include <gtest/gtest.h>

#include "tests/controller/report_builder.h"
#include "tests/controller/test_util.h"

namespace fairwatch::controller {
namespace {

using ::fairwatch::controller::testing::Host;
using ::fairwatch::controller::testing::kT0;
using ::fairwatch::controller::testing::MakeTenant;
using ::fairwatch::controller::testing::TempDir;

class JudgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(dir_.Join("c.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    host_ = std::make_unique<Host>(&fleet_, "hv", 2);
    host_->Inventory({MakeTenant("hog", "hog-vm"), MakeTenant("victim", "victim-vm")});
    judge_ = std::make_unique<Judge>(
        &fleet_, store_.get(),
        [this](const std::string& host, const v1::ControllerMessage& m) -> absl::Status {
          if (!connected_) return absl::NotFoundError("host hv has no live stream");
          EXPECT_EQ(host, "hv");
          sent_.push_back(m.limit());
          return absl::OkStatus();
        },
        JudgeOptions{});
  }

  // One second of the host; the judge runs right after the report.
  void Tick(bool contended) {
    if (contended) {
      host_->Tick({{"hog", {1.6, 2.4, 23}}, {"victim", {0.4, 0.6, 23}}});
    } else {
      host_->Tick({{"hog", {0.05, 0, 18}}, {"victim", {0.4, 0.01, 18}}});
    }
    judge_->RunOnce(kT0 + absl::Seconds(static_cast<int64_t>(host_->seq())));
  }

  std::vector<v1::Case> Cases() {
    CaseFilter all;
    all.limit = 0;
    absl::StatusOr<std::vector<v1::Case>> cases = store_->ListCases(all);
    EXPECT_TRUE(cases.ok()) << cases.status();
    return cases.ok() ? *cases : std::vector<v1::Case>{};
  }

  TempDir dir_;
  FleetState fleet_{FleetOptions{}};
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Judge> judge_;
  bool connected_ = true;
  std::vector<v1::LimitCommand> sent_;
};

TEST_F(JudgeTest, AnOffenderGetsACaseALimitCommandAndItsAckIsRecorded) {
  for (int i = 0; i < 10; ++i) Tick(false);
  EXPECT_TRUE(Cases().empty());
  for (int i = 0; i < 3; ++i) Tick(true);
  std::vector<v1::Case> cases = Cases();
  ASSERT_EQ(cases.size(), 1u);
  const v1::Case& c = cases[0];
  EXPECT_EQ(c.state(), v1::CASE_STATE_OPEN);
  EXPECT_EQ(c.tenant_id(), "hog");
  EXPECT_EQ(c.tenant_name(), "hog-vm");
  EXPECT_EQ(c.resource(), v1::RESOURCE_CPU);
  EXPECT_EQ(c.opened_by(), "policy");
  EXPECT_NEAR(c.opening().usage(), 1.6, 0.01);
  EXPECT_NEAR(c.opening().fair_share(), 1.0, 0.01);
  ASSERT_EQ(c.opening().harmed_size(), 1);
  EXPECT_EQ(c.opening().harmed(0).tenant_id(), "victim");
  ASSERT_EQ(c.actions_size(), 1);
  EXPECT_EQ(c.actions(0).kind(), v1::ACTION_KIND_LIMIT);
  EXPECT_DOUBLE_EQ(c.actions(0).limit(), 0) << "CPU: the weight first, no cap";
  EXPECT_DOUBLE_EQ(c.actions(0).weight(), 0.01);
  EXPECT_EQ(c.actions(0).ack(), v1::ACK_STATE_PENDING);

  ASSERT_EQ(sent_.size(), 1u);
  EXPECT_EQ(sent_[0].kind(), v1::LimitCommand::KIND_APPLY);
  EXPECT_EQ(sent_[0].command_id(), absl::StrCat(c.actions(0).action_id()));
  EXPECT_EQ(sent_[0].limit().tenant_id(), "hog");
  EXPECT_EQ(sent_[0].limit().lever(), v1::LEVER_WEIGHT);
  EXPECT_DOUBLE_EQ(sent_[0].limit().value(), 0.01);
  EXPECT_EQ(sent_[0].lease_ms(), 30000u);

  v1::LimitAck ack;
  ack.set_command_id(sent_[0].command_id());
  ack.set_status_code(0);
  ack.mutable_in_effect()->set_value(0.0098);
  judge_->OnAck("hv", ack, kT0 + absl::Seconds(14));
  absl::StatusOr<v1::Case> after = store_->GetCase(c.case_id());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->actions(0).ack(), v1::ACK_STATE_APPLIED);
  EXPECT_EQ(judge_->stats().acks_applied, 1u);

  // Harm persists under the lowered weight: a cap beside it, two commands
  // for one action; the weight's failure is the action's failure.
  for (int i = 0; i < 6; ++i) Tick(true);
  after = store_->GetCase(c.case_id());
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->actions_size(), 2);
  const v1::CaseAction& capped = after->actions(1);
  EXPECT_EQ(capped.kind(), v1::ACTION_KIND_STEP_DOWN);
  // What the victim wants (the 0.4 cores it uses; its waiting is not work
  // it would do) and 5 % of the 2 cores left free.
  EXPECT_NEAR(capped.limit(), 1.5, 0.01);
  EXPECT_NEAR(capped.seen().neighbours_need(), 0.4, 0.01);
  EXPECT_NEAR(capped.seen().host_usage(), 2.0, 0.01);
  ASSERT_EQ(capped.seen().neighbours_size(), 1) << "the victim, harmed";
  EXPECT_TRUE(capped.seen().neighbours(0).suffering());
  EXPECT_FALSE(capped.seen().neighbours(0).evidence().empty());
  EXPECT_DOUBLE_EQ(capped.weight(), 0.01);
  ASSERT_EQ(sent_.size(), 3u);
  EXPECT_EQ(sent_[1].command_id(), absl::StrCat(capped.action_id(), "/weight"));
  EXPECT_EQ(sent_[1].limit().lever(), v1::LEVER_WEIGHT);
  EXPECT_EQ(sent_[2].command_id(), absl::StrCat(capped.action_id()));
  EXPECT_EQ(sent_[2].limit().lever(), v1::LEVER_CAP);
  ack.set_command_id(sent_[1].command_id());
  ack.set_status_code(static_cast<int>(absl::StatusCode::kUnavailable));
  ack.set_status_message("cpu.shares: no such file");
  judge_->OnAck("hv", ack, kT0 + absl::Seconds(20));
  after = store_->GetCase(c.case_id());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->actions(1).ack(), v1::ACK_STATE_FAILED);
  EXPECT_EQ(after->actions(1).ack_message(), "cpu.shares: no such file");
}

TEST_F(JudgeTest, HarmPersistsThenEndsTheCaseStepsDownThenIsReleasedAndClosed) {
  for (int i = 0; i < 10; ++i) Tick(false);
  for (int i = 0; i < 12; ++i) Tick(true);   // limit at 13, step down at 18
  for (int i = 0; i < 60; ++i) Tick(false);  // quiet: step up, then release
  std::vector<v1::Case> cases = Cases();
  ASSERT_EQ(cases.size(), 1u);
  const v1::Case& c = cases[0];
  EXPECT_EQ(c.state(), v1::CASE_STATE_CLOSED);
  EXPECT_FALSE(c.close_reason().empty());
  std::vector<v1::ActionKind> kinds;
  for (const auto& a : c.actions()) kinds.push_back(a.kind());
  ASSERT_GE(kinds.size(), 3u);
  EXPECT_EQ(kinds.front(), v1::ACTION_KIND_LIMIT);
  EXPECT_EQ(kinds[1], v1::ACTION_KIND_STEP_DOWN);
  EXPECT_EQ(kinds.back(), v1::ACTION_KIND_RELEASE);
  ASSERT_FALSE(sent_.empty());
  EXPECT_EQ(sent_.back().kind(), v1::LimitCommand::KIND_CLEAR);
  EXPECT_EQ(judge_->stats().cases_closed, 1u);
}

TEST_F(JudgeTest, ACommandThatCannotBeSentIsRecordedAsNotSent) {
  connected_ = false;
  for (int i = 0; i < 10; ++i) Tick(false);
  for (int i = 0; i < 3; ++i) Tick(true);
  std::vector<v1::Case> cases = Cases();
  ASSERT_EQ(cases.size(), 1u);
  ASSERT_EQ(cases[0].actions_size(), 1);
  EXPECT_EQ(cases[0].actions(0).ack(), v1::ACK_STATE_NOT_SENT);
  EXPECT_NE(cases[0].actions(0).ack_message().find("no live stream"), std::string::npos);
  EXPECT_EQ(judge_->stats().commands_failed_to_send, 1u);
}

TEST_F(JudgeTest, CasesLeftOpenByAPreviousControllerAreClosedAtStart) {
  for (int i = 0; i < 10; ++i) Tick(false);
  for (int i = 0; i < 3; ++i) Tick(true);
  ASSERT_EQ(Cases().size(), 1u);
  // A new controller on the same store.
  Judge next(
      &fleet_, store_.get(),
      [](const std::string&, const v1::ControllerMessage&) { return absl::OkStatus(); },
      JudgeOptions{});
  absl::StatusOr<size_t> closed = next.CloseOrphanedCases(kT0 + absl::Minutes(5));
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_EQ(*closed, 1u);
  std::vector<v1::Case> cases = Cases();
  ASSERT_EQ(cases.size(), 1u);
  EXPECT_EQ(cases[0].state(), v1::CASE_STATE_CLOSED);
  EXPECT_NE(cases[0].close_reason().find("controller restarted"), std::string::npos);
  EXPECT_EQ(*next.CloseOrphanedCases(kT0 + absl::Minutes(6)), 0u) << "nothing left to close";
}

TEST_F(JudgeTest, ExemptingAnAccountReleasesItsPolicyLimitAndKeepsItUnlimited) {
  for (int i = 0; i < 10; ++i) Tick(false);
  for (int i = 0; i < 3; ++i) Tick(true);
  ASSERT_EQ(Cases().size(), 1u);
  v1::Exemption e;
  e.set_account("acct");  // MakeTenant's default account
  e.set_created_by("operator:alice");
  e.set_reason("backup service");
  absl::StatusOr<v1::Exemption> stored = judge_->Exempt(e, kT0 + absl::Seconds(14));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_GT(stored->exemption_id(), 0u);
  std::vector<v1::Case> cases = Cases();
  ASSERT_EQ(cases.size(), 1u);
  EXPECT_EQ(cases[0].state(), v1::CASE_STATE_CLOSED);
  EXPECT_EQ(cases[0].close_reason(), "exempted by operator:alice: backup service");
  EXPECT_EQ(cases[0].actions().rbegin()->decided_by(), "operator:alice");
  EXPECT_EQ(sent_.back().kind(), v1::LimitCommand::KIND_CLEAR);
  // Still offending, never limited again; no cool-down needed for that. It is
  // on record once, as a case left alone with who exempted it and why.
  const size_t sent_before = sent_.size();
  for (int i = 0; i < 10; ++i) Tick(true);
  EXPECT_EQ(sent_.size(), sent_before);
  cases = Cases();
  ASSERT_EQ(cases.size(), 2u);
  const v1::Case& skipped = cases[0].case_id() > cases[1].case_id() ? cases[0] : cases[1];
  EXPECT_EQ(skipped.state(), v1::CASE_STATE_CLOSED);
  EXPECT_EQ(skipped.close_reason(),
            "left alone: exempt: account acct exempted by operator:alice (exemption 1: backup "
            "service)");
  ASSERT_EQ(skipped.actions_size(), 1);
  EXPECT_EQ(skipped.actions(0).kind(), v1::ACTION_KIND_SKIP);
  EXPECT_EQ(skipped.actions(0).ack(), v1::ACK_STATE_NOT_SENT);
  EXPECT_GT(skipped.opening().usage(), skipped.opening().fair_share());
  // A new judge on the same store knows the exemption.
  Judge next(
      &fleet_, store_.get(),
      [](const std::string&, const v1::ControllerMessage&) { return absl::OkStatus(); },
      JudgeOptions{});
  ASSERT_TRUE(next.LoadOperatorState().ok());
  ASSERT_EQ(next.Exemptions().size(), 1u);
  EXPECT_EQ(next.Exemptions()[0].account(), "acct");
}

TEST_F(JudgeTest, DryRunOnLiftsPolicyLimitsAndOffClosesDryRunCases) {
  for (int i = 0; i < 10; ++i) Tick(false);
  for (int i = 0; i < 3; ++i) Tick(true);
  ASSERT_EQ(Cases().size(), 1u);
  absl::StatusOr<DryRunState> on = judge_->SetDryRun(
      true, {}, "operator:alice", "new policy, watching", kT0 + absl::Seconds(14));
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->all);
  EXPECT_GT(on->last_change.change_id(), 0u);
  EXPECT_EQ(sent_.back().kind(), v1::LimitCommand::KIND_CLEAR);
  std::vector<v1::Case> cases = Cases();
  ASSERT_EQ(cases.size(), 1u);
  EXPECT_EQ(cases[0].state(), v1::CASE_STATE_CLOSED);

  // The offender gets a dry-run case: recorded, nothing sent.
  const size_t sent_before = sent_.size();
  for (int i = 0; i < 5; ++i) Tick(true);
  cases = Cases();
  ASSERT_EQ(cases.size(), 2u);
  EXPECT_TRUE(cases[0].dry_run());
  EXPECT_EQ(cases[0].state(), v1::CASE_STATE_OPEN);
  EXPECT_EQ(sent_.size(), sent_before);

  // Restarted, the judge keeps dry run on.
  Judge next(
      &fleet_, store_.get(),
      [](const std::string&, const v1::ControllerMessage&) { return absl::OkStatus(); },
      JudgeOptions{});
  ASSERT_TRUE(next.LoadOperatorState().ok());
  EXPECT_TRUE(next.dry_run().all);
  EXPECT_EQ(next.dry_run().last_change.changed_by(), "operator:alice");

  absl::StatusOr<DryRunState> off =
      judge_->SetDryRun(false, {}, "operator:alice", "looks right", kT0 + absl::Seconds(30));
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->all);
  cases = Cases();
  EXPECT_EQ(cases[0].state(), v1::CASE_STATE_CLOSED);
  EXPECT_NE(cases[0].close_reason().find("dry run turned off"), std::string::npos);
  EXPECT_EQ(sent_.size(), sent_before) << "closing a dry-run case sends nothing";
  // Judged afresh, for real (no cool-down after a dry-run case).
  for (int i = 0; i < 5; ++i) Tick(true);
  cases = Cases();
  ASSERT_EQ(cases.size(), 3u);
  EXPECT_FALSE(cases[0].dry_run());
  EXPECT_EQ(sent_.back().kind(), v1::LimitCommand::KIND_APPLY);
}

TEST_F(JudgeTest, CasesOfAHostDroppedFromTheFleetAreClosed) {
  for (int i = 0; i < 10; ++i) Tick(false);
  for (int i = 0; i < 3; ++i) Tick(true);
  ASSERT_EQ(Cases().size(), 1u);
  ASSERT_TRUE(fleet_.OnDisconnect("hv", 1, kT0 + absl::Seconds(14)));
  connected_ = false;
  ASSERT_EQ(fleet_.ExpireStaleHosts(kT0 + absl::Hours(1)).size(), 1u);
  judge_->RunOnce(kT0 + absl::Hours(1));
  std::vector<v1::Case> cases = Cases();
  ASSERT_EQ(cases.size(), 1u);
  EXPECT_EQ(cases[0].state(), v1::CASE_STATE_CLOSED);
  EXPECT_NE(cases[0].close_reason().find("gone from the fleet"), std::string::npos)
      << cases[0].close_reason();
  EXPECT_EQ(cases[0].actions().rbegin()->ack(), v1::ACK_STATE_NOT_SENT);
  EXPECT_EQ(judge_->stats().open_cases.size(), 0u);
}

}  // namespace
}  // namespace fairwatch::controller
