// Durable controller state. `Store` is the seam for a distributed store
// later; `SqliteStore` is the embedded default.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fairwatch/v1/agent.pb.h"
#include "fairwatch/v1/cases.pb.h"

struct sqlite3;
struct sqlite3_stmt;

namespace fairwatch::controller {

struct StoredHost {
  std::string host_id;
  std::string hostname;
  std::string agent_version;
  int64_t first_seen_unix_ns = 0;
  int64_t last_seen_unix_ns = 0;
};

struct StoredTenant {
  std::string host_id;
  std::string tenant_id;
  std::string name;
  std::string account;
  std::string source;  // TenantSource enum name
  int64_t first_seen_unix_ns = 0;
  int64_t last_seen_unix_ns = 0;
  int64_t removed_unix_ns = 0;  // 0 while present
};

struct CaseFilter {
  bool open_only = false;
  std::string host_id;    // empty: every host
  std::string tenant_id;  // empty: every tenant
  uint64_t case_id = 0;   // 0: every case
  uint32_t limit = 100;   // newest first; 0: no limit
};

// How long the store's writes take, each a committed transaction.
struct StoreStats {
  static constexpr double kBucketSeconds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                              0.05,   0.1,   0.25,   0.5,   1,    2.5};
  uint64_t writes = 0;
  uint64_t write_errors = 0;
  double write_seconds = 0;
  // Writes that took at most kBucketSeconds[i] (not cumulative); the rest in the last.
  std::array<uint64_t, std::size(kBucketSeconds) + 1> buckets{};
};

class Store {
 public:
  virtual ~Store() = default;

  virtual StoreStats stats() const { return {}; }

  virtual absl::Status RecordHello(const v1::Hello& hello, absl::Time now) = 0;
  // A full inventory marks every tenant of the host not in it as removed.
  virtual absl::Status RecordInventory(absl::string_view host_id,
                                       const v1::TenantInventory& inventory, absl::Time now) = 0;

  virtual absl::StatusOr<std::vector<StoredHost>> ListHosts() = 0;
  // Empty host_id: all hosts. Includes removed tenants.
  virtual absl::StatusOr<std::vector<StoredTenant>> ListTenants(absl::string_view host_id) = 0;

  // Cases. Every call is one transaction: when it returns OK the record is on
  // disk and survives the controller being killed.
  //
  // Stores `c` as open with its actions (ids assigned); returns it as stored.
  virtual absl::StatusOr<v1::Case> OpenCase(v1::Case c) = 0;
  // Appends an action to an open case; returns it with its id.
  virtual absl::StatusOr<v1::CaseAction> AddAction(uint64_t case_id, v1::CaseAction action) = 0;
  // What the agent said about an action.
  // `in_effect`: the value the agent read back, when it said.
  virtual absl::Status RecordAck(uint64_t action_id, v1::AckState ack, absl::string_view message,
                                 std::optional<double> in_effect, absl::Time at) = 0;
  virtual absl::Status CloseCase(uint64_t case_id, absl::string_view reason, absl::Time at) = 0;
  // NotFound for an unknown id.
  virtual absl::StatusOr<v1::Case> GetCase(uint64_t case_id) = 0;
  // Newest first, with their actions.
  virtual absl::StatusOr<std::vector<v1::Case>> ListCases(const CaseFilter& filter) = 0;

  // Operator exemptions: stored with an id; removal keeps the row, marked.
  virtual absl::StatusOr<v1::Exemption> AddExemption(v1::Exemption exemption) = 0;
  // NotFound when no exemption with that id is in force.
  virtual absl::StatusOr<v1::Exemption> RemoveExemption(uint64_t exemption_id,
                                                        absl::string_view removed_by,
                                                        absl::string_view reason,
                                                        absl::Time at) = 0;
  virtual absl::StatusOr<std::vector<v1::Exemption>> ListExemptions(bool include_removed) = 0;

  // Operator changes to the policy in force; the latest wins after a restart.
  virtual absl::StatusOr<v1::PolicyChange> AddPolicyChange(v1::PolicyChange change) = 0;
  // NotFound when none was ever made.
  virtual absl::StatusOr<v1::PolicyChange> LatestPolicyChange() = 0;

  // The operator audit log, append only.
  virtual absl::StatusOr<v1::AuditEntry> AddAudit(v1::AuditEntry entry) = 0;
  // Newest first; 0: all.
  virtual absl::StatusOr<std::vector<v1::AuditEntry>> ListAudit(uint32_t limit) = 0;
};

class SqliteStore final : public Store {
 public:
  // Opens or creates the database at `path`, creating its parent directory,
  // and applies pending schema migrations.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path);

  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  absl::Status RecordHello(const v1::Hello& hello, absl::Time now) override;
  absl::Status RecordInventory(absl::string_view host_id, const v1::TenantInventory& inventory,
                               absl::Time now) override;
  absl::StatusOr<std::vector<StoredHost>> ListHosts() override;
  absl::StatusOr<std::vector<StoredTenant>> ListTenants(absl::string_view host_id) override;
  absl::StatusOr<v1::Case> OpenCase(v1::Case c) override;
  absl::StatusOr<v1::CaseAction> AddAction(uint64_t case_id, v1::CaseAction action) override;
  absl::Status RecordAck(uint64_t action_id, v1::AckState ack, absl::string_view message,
                         std::optional<double> in_effect, absl::Time at) override;
  absl::Status CloseCase(uint64_t case_id, absl::string_view reason, absl::Time at) override;
  absl::StatusOr<v1::Case> GetCase(uint64_t case_id) override;
  absl::StatusOr<std::vector<v1::Case>> ListCases(const CaseFilter& filter) override;
  absl::StatusOr<v1::Exemption> AddExemption(v1::Exemption exemption) override;
  absl::StatusOr<v1::Exemption> RemoveExemption(uint64_t exemption_id, absl::string_view removed_by,
                                                absl::string_view reason, absl::Time at) override;
  absl::StatusOr<std::vector<v1::Exemption>> ListExemptions(bool include_removed) override;
  absl::StatusOr<v1::PolicyChange> AddPolicyChange(v1::PolicyChange change) override;
  absl::StatusOr<v1::PolicyChange> LatestPolicyChange() override;
  absl::StatusOr<v1::AuditEntry> AddAudit(v1::AuditEntry entry) override;
  absl::StatusOr<std::vector<v1::AuditEntry>> ListAudit(uint32_t limit) override;

  StoreStats stats() const override;

  absl::StatusOr<int> SchemaVersion();
  static int LatestSchemaVersion();
  const std::string& path() const { return path_; }

 private:
  struct StatementDeleter {
    void operator()(sqlite3_stmt* statement) const;
  };
  using Statement = std::unique_ptr<sqlite3_stmt, StatementDeleter>;

  SqliteStore(std::string path, sqlite3* db);

  absl::Status Configure() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PrepareStatements() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Exec(const char* sql, absl::string_view what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Statement> Prepare(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Steps a statement that returns no rows, then resets it.
  absl::Status Run(sqlite3_stmt* statement, absl::string_view what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Error(int rc, absl::string_view what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<int> SchemaVersionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `body` in one IMMEDIATE transaction; rolls back when it fails.
  absl::Status InTransaction(absl::string_view what, const std::function<absl::Status()>& body)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> InsertAction(uint64_t case_id, v1::CaseAction* action)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadActions(v1::Case* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CountWrite(absl::Duration took, bool ok);

  const std::string path_;
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  bool in_transaction_ ABSL_GUARDED_BY(mu_) = false;
  mutable absl::Mutex stats_mu_;
  StoreStats stats_ ABSL_GUARDED_BY(stats_mu_);
  Statement upsert_host_ ABSL_GUARDED_BY(mu_);
  Statement upsert_tenant_ ABSL_GUARDED_BY(mu_);
  Statement remove_tenant_ ABSL_GUARDED_BY(mu_);
  Statement remove_all_tenants_ ABSL_GUARDED_BY(mu_);
  Statement list_hosts_ ABSL_GUARDED_BY(mu_);
  Statement list_tenants_ ABSL_GUARDED_BY(mu_);
  Statement list_host_tenants_ ABSL_GUARDED_BY(mu_);
  Statement insert_case_ ABSL_GUARDED_BY(mu_);
  Statement insert_action_ ABSL_GUARDED_BY(mu_);
  Statement case_state_ ABSL_GUARDED_BY(mu_);
  Statement record_ack_ ABSL_GUARDED_BY(mu_);
  Statement close_case_ ABSL_GUARDED_BY(mu_);
  Statement list_actions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fairwatch::controller
