#include "controller/store.h"

#include <sqlite3.h>

#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"

namespace fairwatch::controller {
namespace {

struct Migration {
  int version;
  const char* sql;
};

// Append only: a released migration is never edited, a change is a new one.
constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE hosts (
  host_id TEXT PRIMARY KEY NOT NULL,
  hostname TEXT NOT NULL,
  agent_version TEXT NOT NULL,
  first_seen_unix_ns INTEGER NOT NULL,
  last_seen_unix_ns INTEGER NOT NULL
);
CREATE TABLE tenants (
  host_id TEXT NOT NULL,
  tenant_id TEXT NOT NULL,
  name TEXT NOT NULL,
  account TEXT NOT NULL,
  source TEXT NOT NULL,
  first_seen_unix_ns INTEGER NOT NULL,
  last_seen_unix_ns INTEGER NOT NULL,
  removed_unix_ns INTEGER,
  PRIMARY KEY (host_id, tenant_id)
);
)sql"},
    {2, R"sql(
CREATE TABLE cases (
  case_id INTEGER PRIMARY KEY AUTOINCREMENT,
  host_id TEXT NOT NULL,
  tenant_id TEXT NOT NULL,
  tenant_name TEXT NOT NULL,
  resource TEXT NOT NULL,
  state TEXT NOT NULL,
  opened_unix_ns INTEGER NOT NULL,
  closed_unix_ns INTEGER NOT NULL DEFAULT 0,
  opened_by TEXT NOT NULL,
  close_reason TEXT NOT NULL DEFAULT '',
  dry_run INTEGER NOT NULL,
  opening BLOB NOT NULL
);
CREATE INDEX cases_by_state ON cases(state, host_id, tenant_id);
CREATE TABLE case_actions (
  action_id INTEGER PRIMARY KEY AUTOINCREMENT,
  case_id INTEGER NOT NULL REFERENCES cases(case_id),
  kind TEXT NOT NULL,
  limit_value REAL NOT NULL,
  at_unix_ns INTEGER NOT NULL,
  lease_expires_unix_ns INTEGER NOT NULL,
  dry_run INTEGER NOT NULL,
  reason TEXT NOT NULL,
  decided_by TEXT NOT NULL,
  ack TEXT NOT NULL,
  ack_message TEXT NOT NULL DEFAULT '',
  ack_unix_ns INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX case_actions_by_case ON case_actions(case_id, action_id);
)sql"},
    {3, R"sql(
CREATE TABLE exemptions (
  exemption_id INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant_id TEXT NOT NULL,
  account TEXT NOT NULL,
  host_id TEXT NOT NULL,
  tenant_name TEXT NOT NULL,
  created_by TEXT NOT NULL,
  reason TEXT NOT NULL,
  created_unix_ns INTEGER NOT NULL,
  removed_unix_ns INTEGER NOT NULL DEFAULT 0,
  removed_by TEXT NOT NULL DEFAULT '',
  removed_reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE policy_changes (
  change_id INTEGER PRIMARY KEY AUTOINCREMENT,
  at_unix_ns INTEGER NOT NULL,
  changed_by TEXT NOT NULL,
  reason TEXT NOT NULL,
  dry_run INTEGER NOT NULL,
  dry_run_resources TEXT NOT NULL
);
CREATE TABLE audit_log (
  entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
  at_unix_ns INTEGER NOT NULL,
  operator_name TEXT NOT NULL,
  peer TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  reason TEXT NOT NULL,
  request TEXT NOT NULL,
  ok INTEGER NOT NULL,
  result TEXT NOT NULL
);
)sql"},
    {4, R"sql(
ALTER TABLE case_actions ADD COLUMN in_effect REAL;
)sql"},
    // The weight lever beside the cap (CaseAction.weight); 0: none.
    {5, R"sql(
ALTER TABLE case_actions ADD COLUMN weight REAL NOT NULL DEFAULT 0;
)sql"},
    // What the interval an action answered showed (CaseAction.seen), serialized.
    {6, R"sql(
ALTER TABLE case_actions ADD COLUMN seen BLOB;
)sql"},
};

absl::StatusCode SqliteCode(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::StatusCode::kUnavailable;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
      return absl::StatusCode::kPermissionDenied;
    case SQLITE_CANTOPEN:
      return absl::StatusCode::kFailedPrecondition;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::StatusCode::kDataLoss;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kInternal;
  }
}

void BindText(sqlite3_stmt* statement, int index, absl::string_view text) {
  // SQLITE_STATIC: every caller steps and resets before the text goes away.
  sqlite3_bind_text(statement, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
}

std::string ColumnText(sqlite3_stmt* statement, int column) {
  const unsigned char* text = sqlite3_column_text(statement, column);
  if (text == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(sqlite3_column_bytes(statement, column)));
}

std::string JoinResources(const google::protobuf::RepeatedField<int>& resources) {
  std::string out;
  for (int r : resources) {
    if (!out.empty()) out += ",";
    out += v1::Resource_Name(static_cast<v1::Resource>(r));
  }
  return out;
}

constexpr char kExemptionColumns[] =
    "SELECT exemption_id, tenant_id, account, host_id, tenant_name, created_by, reason, "
    "created_unix_ns, removed_unix_ns, removed_by, removed_reason FROM exemptions";

v1::Exemption ReadExemption(sqlite3_stmt* st) {
  v1::Exemption e;
  e.set_exemption_id(static_cast<uint64_t>(sqlite3_column_int64(st, 0)));
  e.set_tenant_id(ColumnText(st, 1));
  e.set_account(ColumnText(st, 2));
  e.set_host_id(ColumnText(st, 3));
  e.set_tenant_name(ColumnText(st, 4));
  e.set_created_by(ColumnText(st, 5));
  e.set_reason(ColumnText(st, 6));
  e.set_created_unix_ns(sqlite3_column_int64(st, 7));
  e.set_removed_unix_ns(sqlite3_column_int64(st, 8));
  e.set_removed_by(ColumnText(st, 9));
  e.set_removed_reason(ColumnText(st, 10));
  return e;
}

}  // namespace

void SqliteStore::StatementDeleter::operator()(sqlite3_stmt* statement) const {
  sqlite3_finalize(statement);
}

int SqliteStore::LatestSchemaVersion() { return kMigrations[std::size(kMigrations) - 1].version; }

SqliteStore::SqliteStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}

SqliteStore::~SqliteStore() {
  absl::MutexLock lock(&mu_);
  upsert_host_.reset();
  upsert_tenant_.reset();
  remove_tenant_.reset();
  remove_all_tenants_.reset();
  list_hosts_.reset();
  list_tenants_.reset();
  list_host_tenants_.reset();
  insert_case_.reset();
  insert_action_.reset();
  case_state_.reset();
  record_ack_.reset();
  close_case_.reset();
  list_actions_.reset();
  sqlite3_close_v2(db_);
}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("database path is empty");
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code error;
    std::filesystem::create_directories(parent, error);
    if (error) {
      return absl::Status(ErrnoToCode(error.value()),
                          absl::StrCat("creating directory ", parent.string(), " for database ",
                                       path, ": ", error.message()));
    }
  }
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return absl::Status(SqliteCode(rc), absl::StrCat("opening database ", path, ": ", message));
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(path, db));
  absl::MutexLock lock(&store->mu_);
  RETURN_IF_ERROR(store->Configure());
  RETURN_IF_ERROR(store->Migrate());
  RETURN_IF_ERROR(store->PrepareStatements());
  return store;
}

absl::Status SqliteStore::Error(int rc, absl::string_view what) {
  const absl::string_view detail = sqlite3_errmsg(db_);
  const absl::string_view kind = sqlite3_errstr(rc);
  return absl::Status(SqliteCode(rc),
                      absl::StrCat(what, " in database ", path_, ": ", detail,
                                   detail == kind ? "" : absl::StrCat(" (", kind, ")")));
}

absl::Status SqliteStore::Exec(const char* sql, absl::string_view what) {
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Error(rc, what);
  return absl::OkStatus();
}

absl::StatusOr<SqliteStore::Statement> SqliteStore::Prepare(const char* sql) {
  sqlite3_stmt* statement = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &statement, nullptr);
  if (rc != SQLITE_OK) return Error(rc, absl::StrCat("preparing \"", sql, "\""));
  return Statement(statement);
}

void SqliteStore::CountWrite(absl::Duration took, bool ok) {
  const double seconds = absl::ToDoubleSeconds(took);
  absl::MutexLock lock(&stats_mu_);
  ++stats_.writes;
  if (!ok) ++stats_.write_errors;
  stats_.write_seconds += seconds;
  size_t bucket = 0;
  while (bucket < std::size(StoreStats::kBucketSeconds) &&
         seconds > StoreStats::kBucketSeconds[bucket]) {
    ++bucket;
  }
  ++stats_.buckets[bucket];
}

StoreStats SqliteStore::stats() const {
  absl::MutexLock lock(&stats_mu_);
  return stats_;
}

absl::Status SqliteStore::Run(sqlite3_stmt* statement, absl::string_view what) {
  const absl::Time start = absl::Now();
  const int rc = sqlite3_step(statement);
  // A statement outside a transaction commits on its own.
  if (!in_transaction_ && !sqlite3_stmt_readonly(statement)) {
    CountWrite(absl::Now() - start, rc == SQLITE_DONE);
  }
  absl::Status status = rc == SQLITE_DONE ? absl::OkStatus() : Error(rc, what);
  sqlite3_reset(statement);
  sqlite3_clear_bindings(statement);
  return status;
}

absl::Status SqliteStore::Configure() {
  // Lets a second process (an operator's sqlite3 shell, a backup) hold a lock
  // briefly without failing our writes.
  sqlite3_busy_timeout(db_, 5000);
  ASSIGN_OR_RETURN(Statement journal, Prepare("PRAGMA journal_mode=WAL"));
  const int rc = sqlite3_step(journal.get());
  if (rc != SQLITE_ROW) return Error(rc, "setting journal_mode=WAL");
  const std::string mode = ColumnText(journal.get(), 0);
  if (mode != "wal") {
    return absl::FailedPreconditionError(
        absl::StrCat("database ", path_, " cannot use WAL journaling (got \"", mode,
                     "\"); it must be on a local filesystem that supports shared memory"));
  }
  // WAL + NORMAL never corrupts the database; a power loss may drop the last
  // commits, which agents re-send (full inventory on every connect), and it
  // spares an fsync per inventory change.
  return Exec("PRAGMA synchronous=NORMAL", "setting synchronous=NORMAL");
}

absl::StatusOr<int> SqliteStore::SchemaVersionLocked() {
  ASSIGN_OR_RETURN(Statement query,
                   Prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
  const int rc = sqlite3_step(query.get());
  if (rc != SQLITE_ROW) return Error(rc, "reading the schema version");
  return sqlite3_column_int(query.get(), 0);
}

absl::StatusOr<int> SqliteStore::SchemaVersion() {
  absl::MutexLock lock(&mu_);
  return SchemaVersionLocked();
}

absl::Status SqliteStore::Migrate() {
  RETURN_IF_ERROR(
      Exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
           "version INTEGER PRIMARY KEY NOT NULL, applied_unix_ns INTEGER NOT NULL)",
           "creating schema_migrations"));
  for (const Migration& migration : kMigrations) {
    // IMMEDIATE takes the write lock first, so two controllers starting on
    // one file cannot both apply a migration.
    RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", "starting a migration transaction"));
    absl::Status status = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(int current, SchemaVersionLocked());
      if (current > LatestSchemaVersion()) {
        return absl::FailedPreconditionError(
            absl::StrCat("database ", path_, " has schema version ", current,
                         ", newer than this controller knows (", LatestSchemaVersion(),
                         "); run a newer fairwatch-controller"));
      }
      if (current >= migration.version) return absl::OkStatus();
      RETURN_IF_ERROR(Exec(migration.sql, absl::StrCat("applying migration ", migration.version)));
      ASSIGN_OR_RETURN(Statement record,
                       Prepare("INSERT INTO schema_migrations(version, applied_unix_ns) "
                               "VALUES (?1, ?2)"));
      sqlite3_bind_int(record.get(), 1, migration.version);
      sqlite3_bind_int64(record.get(), 2, absl::ToUnixNanos(absl::Now()));
      return Run(record.get(), absl::StrCat("recording migration ", migration.version));
    }();
    if (!status.ok()) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return status;
    }
    RETURN_IF_ERROR(Exec("COMMIT", absl::StrCat("committing migration ", migration.version)));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::PrepareStatements() {
  ASSIGN_OR_RETURN(upsert_host_, Prepare(R"sql(
INSERT INTO hosts(host_id, hostname, agent_version, first_seen_unix_ns, last_seen_unix_ns)
VALUES (?1, ?2, ?3, ?4, ?4)
ON CONFLICT(host_id) DO UPDATE SET
  hostname = excluded.hostname,
  agent_version = excluded.agent_version,
  last_seen_unix_ns = excluded.last_seen_unix_ns)sql"));
  ASSIGN_OR_RETURN(upsert_tenant_, Prepare(R"sql(
INSERT INTO tenants(host_id, tenant_id, name, account, source, first_seen_unix_ns,
                    last_seen_unix_ns, removed_unix_ns)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, NULL)
ON CONFLICT(host_id, tenant_id) DO UPDATE SET
  name = excluded.name,
  account = excluded.account,
  source = excluded.source,
  last_seen_unix_ns = excluded.last_seen_unix_ns,
  removed_unix_ns = NULL)sql"));
  ASSIGN_OR_RETURN(remove_tenant_, Prepare(R"sql(
UPDATE tenants SET removed_unix_ns = ?3
WHERE host_id = ?1 AND tenant_id = ?2 AND removed_unix_ns IS NULL)sql"));
  ASSIGN_OR_RETURN(remove_all_tenants_, Prepare(R"sql(
UPDATE tenants SET removed_unix_ns = ?2
WHERE host_id = ?1 AND removed_unix_ns IS NULL)sql"));
  ASSIGN_OR_RETURN(list_hosts_, Prepare(R"sql(
SELECT host_id, hostname, agent_version, first_seen_unix_ns, last_seen_unix_ns
FROM hosts ORDER BY host_id)sql"));
  constexpr char kTenantColumns[] =
      "SELECT host_id, tenant_id, name, account, source, first_seen_unix_ns, last_seen_unix_ns, "
      "COALESCE(removed_unix_ns, 0) FROM tenants";
  ASSIGN_OR_RETURN(list_tenants_,
                   Prepare(absl::StrCat(kTenantColumns, " ORDER BY host_id, tenant_id").c_str()));
  ASSIGN_OR_RETURN(
      list_host_tenants_,
      Prepare(absl::StrCat(kTenantColumns, " WHERE host_id = ?1 ORDER BY tenant_id").c_str()));
  ASSIGN_OR_RETURN(insert_case_, Prepare(R"sql(
INSERT INTO cases(host_id, tenant_id, tenant_name, resource, state, opened_unix_ns, opened_by,
                  dry_run, opening)
VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?7, ?8))sql"));
  ASSIGN_OR_RETURN(insert_action_, Prepare(R"sql(
INSERT INTO case_actions(case_id, kind, limit_value, at_unix_ns, lease_expires_unix_ns, dry_run,
                         reason, decided_by, ack, ack_message, ack_unix_ns, weight, seen)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13))sql"));
  ASSIGN_OR_RETURN(case_state_, Prepare("SELECT state FROM cases WHERE case_id = ?1"));
  ASSIGN_OR_RETURN(record_ack_, Prepare(R"sql(
UPDATE case_actions SET ack = ?2, ack_message = ?3, ack_unix_ns = ?4, in_effect = ?5
WHERE action_id = ?1)sql"));
  ASSIGN_OR_RETURN(close_case_, Prepare(R"sql(
UPDATE cases SET state = 'closed', close_reason = ?2, closed_unix_ns = ?3
WHERE case_id = ?1 AND state = 'open')sql"));
  ASSIGN_OR_RETURN(list_actions_, Prepare(R"sql(
SELECT action_id, kind, limit_value, at_unix_ns, lease_expires_unix_ns, dry_run, reason,
       decided_by, ack, ack_message, ack_unix_ns, in_effect, weight, seen
FROM case_actions WHERE case_id = ?1 ORDER BY action_id)sql"));
  return absl::OkStatus();
}

absl::Status SqliteStore::RecordHello(const v1::Hello& hello, absl::Time now) {
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* statement = upsert_host_.get();
  BindText(statement, 1, hello.host_id());
  BindText(statement, 2, hello.hostname());
  BindText(statement, 3, hello.agent_version());
  sqlite3_bind_int64(statement, 4, absl::ToUnixNanos(now));
  return Run(statement, absl::StrCat("recording host ", hello.host_id()));
}

absl::Status SqliteStore::RecordInventory(absl::string_view host_id,
                                          const v1::TenantInventory& inventory, absl::Time now) {
  const int64_t now_ns = absl::ToUnixNanos(now);
  absl::MutexLock lock(&mu_);
  const std::string what = absl::StrCat("recording the ", inventory.full() ? "full" : "delta",
                                        " inventory of host ", host_id);
  return InTransaction(what, [&]() -> absl::Status {
    if (inventory.full()) {
      BindText(remove_all_tenants_.get(), 1, host_id);
      sqlite3_bind_int64(remove_all_tenants_.get(), 2, now_ns);
      RETURN_IF_ERROR(Run(remove_all_tenants_.get(), what));
    }
    for (const v1::Tenant& tenant : inventory.upserted()) {
      sqlite3_stmt* statement = upsert_tenant_.get();
      BindText(statement, 1, host_id);
      BindText(statement, 2, tenant.id());
      BindText(statement, 3, tenant.name());
      BindText(statement, 4, tenant.account());
      BindText(statement, 5, v1::TenantSource_Name(tenant.source()));
      sqlite3_bind_int64(statement, 6, now_ns);
      RETURN_IF_ERROR(Run(statement, absl::StrCat(what, ", tenant ", tenant.id())));
    }
    for (const std::string& tenant_id : inventory.removed_ids()) {
      sqlite3_stmt* statement = remove_tenant_.get();
      BindText(statement, 1, host_id);
      BindText(statement, 2, tenant_id);
      sqlite3_bind_int64(statement, 3, now_ns);
      RETURN_IF_ERROR(Run(statement, absl::StrCat(what, ", removing tenant ", tenant_id)));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<StoredHost>> SqliteStore::ListHosts() {
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* statement = list_hosts_.get();
  std::vector<StoredHost> hosts;
  int rc;
  while ((rc = sqlite3_step(statement)) == SQLITE_ROW) {
    StoredHost& host = hosts.emplace_back();
    host.host_id = ColumnText(statement, 0);
    host.hostname = ColumnText(statement, 1);
    host.agent_version = ColumnText(statement, 2);
    host.first_seen_unix_ns = sqlite3_column_int64(statement, 3);
    host.last_seen_unix_ns = sqlite3_column_int64(statement, 4);
  }
  sqlite3_reset(statement);
  if (rc != SQLITE_DONE) return Error(rc, "listing hosts");
  return hosts;
}

absl::StatusOr<std::vector<StoredTenant>> SqliteStore::ListTenants(absl::string_view host_id) {
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* statement = host_id.empty() ? list_tenants_.get() : list_host_tenants_.get();
  if (!host_id.empty()) BindText(statement, 1, host_id);
  std::vector<StoredTenant> tenants;
  int rc;
  while ((rc = sqlite3_step(statement)) == SQLITE_ROW) {
    StoredTenant& tenant = tenants.emplace_back();
    tenant.host_id = ColumnText(statement, 0);
    tenant.tenant_id = ColumnText(statement, 1);
    tenant.name = ColumnText(statement, 2);
    tenant.account = ColumnText(statement, 3);
    tenant.source = ColumnText(statement, 4);
    tenant.first_seen_unix_ns = sqlite3_column_int64(statement, 5);
    tenant.last_seen_unix_ns = sqlite3_column_int64(statement, 6);
    tenant.removed_unix_ns = sqlite3_column_int64(statement, 7);
  }
  sqlite3_reset(statement);
  sqlite3_clear_bindings(statement);
  if (rc != SQLITE_DONE) return Error(rc, absl::StrCat("listing tenants of host ", host_id));
  return tenants;
}

absl::Status SqliteStore::InTransaction(absl::string_view what,
                                        const std::function<absl::Status()>& body) {
  const absl::Time start = absl::Now();
  absl::Status status = Exec("BEGIN IMMEDIATE", what);
  if (status.ok()) {
    in_transaction_ = true;
    status = body();
    in_transaction_ = false;
    if (status.ok()) {
      status = Exec("COMMIT", what);
    } else {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }
  CountWrite(absl::Now() - start, status.ok());
  return status;
}

absl::StatusOr<uint64_t> SqliteStore::InsertAction(uint64_t case_id, v1::CaseAction* action) {
  sqlite3_stmt* st = insert_action_.get();
  const std::string kind = v1::ActionKind_Name(action->kind());
  const std::string ack = v1::AckState_Name(action->ack());
  sqlite3_bind_int64(st, 1, static_cast<int64_t>(case_id));
  BindText(st, 2, kind);
  sqlite3_bind_double(st, 3, action->limit());
  sqlite3_bind_int64(st, 4, action->at_unix_ns());
  sqlite3_bind_int64(st, 5, action->lease_expires_unix_ns());
  sqlite3_bind_int(st, 6, action->dry_run() ? 1 : 0);
  BindText(st, 7, action->reason());
  BindText(st, 8, action->decided_by());
  BindText(st, 9, ack);
  BindText(st, 10, action->ack_message());
  sqlite3_bind_int64(st, 11, action->ack_unix_ns());
  sqlite3_bind_double(st, 12, action->weight());
  const std::string seen = action->has_seen() ? action->seen().SerializeAsString() : "";
  if (action->has_seen()) {
    sqlite3_bind_blob(st, 13, seen.data(), static_cast<int>(seen.size()), SQLITE_STATIC);
  } else {
    sqlite3_bind_null(st, 13);
  }
  RETURN_IF_ERROR(Run(st, absl::StrCat("recording an action of case ", case_id)));
  action->set_action_id(static_cast<uint64_t>(sqlite3_last_insert_rowid(db_)));
  return action->action_id();
}

absl::StatusOr<v1::Case> SqliteStore::OpenCase(v1::Case c) {
  if (c.host_id().empty() || c.tenant_id().empty()) {
    return absl::InvalidArgumentError("a case needs a host and a tenant");
  }
  absl::MutexLock lock(&mu_);
  const std::string what =
      absl::StrCat("opening a case for tenant ", c.tenant_id(), " on host ", c.host_id());
  RETURN_IF_ERROR(InTransaction(what, [&]() -> absl::Status {
    sqlite3_stmt* st = insert_case_.get();
    const std::string resource = v1::Resource_Name(c.resource());
    const std::string opening = c.opening().SerializeAsString();
    BindText(st, 1, c.host_id());
    BindText(st, 2, c.tenant_id());
    BindText(st, 3, c.tenant_name());
    BindText(st, 4, resource);
    sqlite3_bind_int64(st, 5, c.opened_unix_ns());
    BindText(st, 6, c.opened_by());
    sqlite3_bind_int(st, 7, c.dry_run() ? 1 : 0);
    sqlite3_bind_blob(st, 8, opening.data(), static_cast<int>(opening.size()), SQLITE_STATIC);
    RETURN_IF_ERROR(Run(st, what));
    c.set_case_id(static_cast<uint64_t>(sqlite3_last_insert_rowid(db_)));
    for (v1::CaseAction& action : *c.mutable_actions()) {
      RETURN_IF_ERROR(InsertAction(c.case_id(), &action).status());
    }
    return absl::OkStatus();
  }));
  c.set_state(v1::CASE_STATE_OPEN);
  return c;
}

absl::StatusOr<v1::CaseAction> SqliteStore::AddAction(uint64_t case_id, v1::CaseAction action) {
  absl::MutexLock lock(&mu_);
  const std::string what = absl::StrCat("adding an action to case ", case_id);
  RETURN_IF_ERROR(InTransaction(what, [&]() -> absl::Status {
    sqlite3_stmt* st = case_state_.get();
    sqlite3_bind_int64(st, 1, static_cast<int64_t>(case_id));
    const int rc = sqlite3_step(st);
    const std::string state = rc == SQLITE_ROW ? ColumnText(st, 0) : "";
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error(rc, what);
    if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("no case ", case_id));
    if (state != "open") {
      return absl::FailedPreconditionError(absl::StrCat("case ", case_id, " is closed"));
    }
    return InsertAction(case_id, &action).status();
  }));
  return action;
}

absl::Status SqliteStore::RecordAck(uint64_t action_id, v1::AckState ack, absl::string_view message,
                                    std::optional<double> in_effect, absl::Time at) {
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* st = record_ack_.get();
  const std::string state = v1::AckState_Name(ack);
  sqlite3_bind_int64(st, 1, static_cast<int64_t>(action_id));
  BindText(st, 2, state);
  BindText(st, 3, message);
  sqlite3_bind_int64(st, 4, absl::ToUnixNanos(at));
  if (in_effect) {
    sqlite3_bind_double(st, 5, *in_effect);
  } else {
    sqlite3_bind_null(st, 5);
  }
  RETURN_IF_ERROR(Run(st, absl::StrCat("recording the acknowledgement of action ", action_id)));
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("no action ", action_id));
  return absl::OkStatus();
}

absl::Status SqliteStore::CloseCase(uint64_t case_id, absl::string_view reason, absl::Time at) {
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* st = close_case_.get();
  sqlite3_bind_int64(st, 1, static_cast<int64_t>(case_id));
  BindText(st, 2, reason);
  sqlite3_bind_int64(st, 3, absl::ToUnixNanos(at));
  RETURN_IF_ERROR(Run(st, absl::StrCat("closing case ", case_id)));
  if (sqlite3_changes(db_) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("case ", case_id, " is not open (unknown or already closed)"));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::LoadActions(v1::Case* c) {
  sqlite3_stmt* st = list_actions_.get();
  sqlite3_bind_int64(st, 1, static_cast<int64_t>(c->case_id()));
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    v1::CaseAction* a = c->add_actions();
    a->set_action_id(static_cast<uint64_t>(sqlite3_column_int64(st, 0)));
    v1::ActionKind kind = v1::ACTION_KIND_UNSPECIFIED;
    v1::ActionKind_Parse(ColumnText(st, 1), &kind);
    a->set_kind(kind);
    a->set_limit(sqlite3_column_double(st, 2));
    a->set_at_unix_ns(sqlite3_column_int64(st, 3));
    a->set_lease_expires_unix_ns(sqlite3_column_int64(st, 4));
    a->set_dry_run(sqlite3_column_int(st, 5) != 0);
    a->set_reason(ColumnText(st, 6));
    a->set_decided_by(ColumnText(st, 7));
    v1::AckState ack = v1::ACK_STATE_UNSPECIFIED;
    v1::AckState_Parse(ColumnText(st, 8), &ack);
    a->set_ack(ack);
    a->set_ack_message(ColumnText(st, 9));
    a->set_ack_unix_ns(sqlite3_column_int64(st, 10));
    if (sqlite3_column_type(st, 11) != SQLITE_NULL) a->set_in_effect(sqlite3_column_double(st, 11));
    a->set_weight(sqlite3_column_double(st, 12));
    if (const void* blob = sqlite3_column_blob(st, 13); blob != nullptr) {
      // A record that does not parse loses its context, not the action.
      if (!a->mutable_seen()->ParseFromArray(blob, sqlite3_column_bytes(st, 13))) a->clear_seen();
    }
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (rc != SQLITE_DONE)
    return Error(rc, absl::StrCat("reading the actions of case ", c->case_id()));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Case>> SqliteStore::ListCases(const CaseFilter& filter) {
  absl::MutexLock lock(&mu_);
  std::string sql =
      "SELECT case_id, host_id, tenant_id, tenant_name, resource, state, opened_unix_ns, "
      "closed_unix_ns, opened_by, close_reason, dry_run, opening FROM cases WHERE 1";
  if (filter.open_only) sql += " AND state = 'open'";
  if (!filter.host_id.empty()) sql += " AND host_id = ?1";
  if (!filter.tenant_id.empty()) sql += " AND tenant_id = ?2";
  if (filter.case_id != 0) sql += " AND case_id = ?4";
  sql += " ORDER BY case_id DESC LIMIT ?3";
  ASSIGN_OR_RETURN(Statement query, Prepare(sql.c_str()));
  sqlite3_stmt* st = query.get();
  if (!filter.host_id.empty()) BindText(st, 1, filter.host_id);
  if (!filter.tenant_id.empty()) BindText(st, 2, filter.tenant_id);
  sqlite3_bind_int64(st, 3, filter.limit > 0 ? filter.limit : -1);
  if (filter.case_id != 0) sqlite3_bind_int64(st, 4, static_cast<int64_t>(filter.case_id));
  std::vector<v1::Case> cases;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    v1::Case& c = cases.emplace_back();
    c.set_case_id(static_cast<uint64_t>(sqlite3_column_int64(st, 0)));
    c.set_host_id(ColumnText(st, 1));
    c.set_tenant_id(ColumnText(st, 2));
    c.set_tenant_name(ColumnText(st, 3));
    v1::Resource resource = v1::RESOURCE_UNSPECIFIED;
    v1::Resource_Parse(ColumnText(st, 4), &resource);
    c.set_resource(resource);
    c.set_state(ColumnText(st, 5) == "open" ? v1::CASE_STATE_OPEN : v1::CASE_STATE_CLOSED);
    c.set_opened_unix_ns(sqlite3_column_int64(st, 6));
    c.set_closed_unix_ns(sqlite3_column_int64(st, 7));
    c.set_opened_by(ColumnText(st, 8));
    c.set_close_reason(ColumnText(st, 9));
    c.set_dry_run(sqlite3_column_int(st, 10) != 0);
    const void* blob = sqlite3_column_blob(st, 11);
    const int size = sqlite3_column_bytes(st, 11);
    if (blob != nullptr && !c.mutable_opening()->ParseFromArray(blob, size)) {
      return absl::DataLossError(absl::StrCat("case ", c.case_id(), " in database ", path_,
                                              ": its opening evidence does not parse"));
    }
  }
  if (rc != SQLITE_DONE) return Error(rc, "listing cases");
  for (v1::Case& c : cases) RETURN_IF_ERROR(LoadActions(&c));
  return cases;
}

absl::StatusOr<v1::Case> SqliteStore::GetCase(uint64_t case_id) {
  CaseFilter filter;
  filter.case_id = case_id;
  ASSIGN_OR_RETURN(std::vector<v1::Case> found, ListCases(filter));
  if (found.empty()) return absl::NotFoundError(absl::StrCat("no case ", case_id));
  return std::move(found.front());
}

absl::StatusOr<v1::Exemption> SqliteStore::AddExemption(v1::Exemption e) {
  if (e.tenant_id().empty() == e.account().empty()) {
    return absl::InvalidArgumentError("an exemption names a tenant or an account, not both");
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement st, Prepare(R"sql(
INSERT INTO exemptions(tenant_id, account, host_id, tenant_name, created_by, reason,
                       created_unix_ns)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7))sql"));
  BindText(st.get(), 1, e.tenant_id());
  BindText(st.get(), 2, e.account());
  BindText(st.get(), 3, e.host_id());
  BindText(st.get(), 4, e.tenant_name());
  BindText(st.get(), 5, e.created_by());
  BindText(st.get(), 6, e.reason());
  sqlite3_bind_int64(st.get(), 7, e.created_unix_ns());
  RETURN_IF_ERROR(Run(st.get(), "recording an exemption"));
  e.set_exemption_id(static_cast<uint64_t>(sqlite3_last_insert_rowid(db_)));
  return e;
}

absl::StatusOr<v1::Exemption> SqliteStore::RemoveExemption(uint64_t exemption_id,
                                                           absl::string_view removed_by,
                                                           absl::string_view reason,
                                                           absl::Time at) {
  absl::MutexLock lock(&mu_);
  const std::string what = absl::StrCat("removing exemption ", exemption_id);
  v1::Exemption removed;
  RETURN_IF_ERROR(InTransaction(what, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Statement update, Prepare(R"sql(
UPDATE exemptions SET removed_unix_ns = ?2, removed_by = ?3, removed_reason = ?4
WHERE exemption_id = ?1 AND removed_unix_ns = 0)sql"));
    sqlite3_bind_int64(update.get(), 1, static_cast<int64_t>(exemption_id));
    sqlite3_bind_int64(update.get(), 2, absl::ToUnixNanos(at));
    BindText(update.get(), 3, removed_by);
    BindText(update.get(), 4, reason);
    RETURN_IF_ERROR(Run(update.get(), what));
    if (sqlite3_changes(db_) == 0) {
      return absl::NotFoundError(
          absl::StrCat("no exemption ", exemption_id, " in force (unknown or already removed)"));
    }
    ASSIGN_OR_RETURN(Statement query,
                     Prepare(absl::StrCat(kExemptionColumns, " WHERE exemption_id = ?1").c_str()));
    sqlite3_bind_int64(query.get(), 1, static_cast<int64_t>(exemption_id));
    const int rc = sqlite3_step(query.get());
    if (rc != SQLITE_ROW) return Error(rc, what);
    removed = ReadExemption(query.get());
    return absl::OkStatus();
  }));
  return removed;
}

absl::StatusOr<std::vector<v1::Exemption>> SqliteStore::ListExemptions(bool include_removed) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement st,
      Prepare(absl::StrCat(kExemptionColumns, include_removed ? "" : " WHERE removed_unix_ns = 0",
                           " ORDER BY exemption_id")
                  .c_str()));
  std::vector<v1::Exemption> out;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) out.push_back(ReadExemption(st.get()));
  if (rc != SQLITE_DONE) return Error(rc, "listing exemptions");
  return out;
}

absl::StatusOr<v1::PolicyChange> SqliteStore::AddPolicyChange(v1::PolicyChange change) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement st, Prepare(R"sql(
INSERT INTO policy_changes(at_unix_ns, changed_by, reason, dry_run, dry_run_resources)
VALUES (?1, ?2, ?3, ?4, ?5))sql"));
  const std::string resources = JoinResources(change.dry_run_resources());
  sqlite3_bind_int64(st.get(), 1, change.at_unix_ns());
  BindText(st.get(), 2, change.changed_by());
  BindText(st.get(), 3, change.reason());
  sqlite3_bind_int(st.get(), 4, change.dry_run() ? 1 : 0);
  BindText(st.get(), 5, resources);
  RETURN_IF_ERROR(Run(st.get(), "recording a policy change"));
  change.set_change_id(static_cast<uint64_t>(sqlite3_last_insert_rowid(db_)));
  return change;
}

absl::StatusOr<v1::PolicyChange> SqliteStore::LatestPolicyChange() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement st, Prepare(R"sql(
SELECT change_id, at_unix_ns, changed_by, reason, dry_run, dry_run_resources
FROM policy_changes ORDER BY change_id DESC LIMIT 1)sql"));
  const int rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) return absl::NotFoundError("no policy change recorded");
  if (rc != SQLITE_ROW) return Error(rc, "reading the latest policy change");
  v1::PolicyChange change;
  change.set_change_id(static_cast<uint64_t>(sqlite3_column_int64(st.get(), 0)));
  change.set_at_unix_ns(sqlite3_column_int64(st.get(), 1));
  change.set_changed_by(ColumnText(st.get(), 2));
  change.set_reason(ColumnText(st.get(), 3));
  change.set_dry_run(sqlite3_column_int(st.get(), 4) != 0);
  for (absl::string_view name : absl::StrSplit(ColumnText(st.get(), 5), ',', absl::SkipEmpty())) {
    v1::Resource resource = v1::RESOURCE_UNSPECIFIED;
    if (!v1::Resource_Parse(std::string(name), &resource)) {
      return absl::DataLossError(absl::StrCat("policy change ", change.change_id(), " in database ",
                                              path_, ": unknown resource ", name));
    }
    change.add_dry_run_resources(resource);
  }
  return change;
}

absl::StatusOr<v1::AuditEntry> SqliteStore::AddAudit(v1::AuditEntry entry) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement st, Prepare(R"sql(
INSERT INTO audit_log(at_unix_ns, operator_name, peer, action, target, reason, request, ok, result)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9))sql"));
  sqlite3_bind_int64(st.get(), 1, entry.at_unix_ns());
  BindText(st.get(), 2, entry.operator_name());
  BindText(st.get(), 3, entry.peer());
  BindText(st.get(), 4, entry.action());
  BindText(st.get(), 5, entry.target());
  BindText(st.get(), 6, entry.reason());
  BindText(st.get(), 7, entry.request());
  sqlite3_bind_int(st.get(), 8, entry.ok() ? 1 : 0);
  BindText(st.get(), 9, entry.result());
  RETURN_IF_ERROR(Run(st.get(), "writing the audit log"));
  entry.set_entry_id(static_cast<uint64_t>(sqlite3_last_insert_rowid(db_)));
  return entry;
}

absl::StatusOr<std::vector<v1::AuditEntry>> SqliteStore::ListAudit(uint32_t limit) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement st, Prepare(R"sql(
SELECT entry_id, at_unix_ns, operator_name, peer, action, target, reason, request, ok, result
FROM audit_log ORDER BY entry_id DESC LIMIT ?1)sql"));
  sqlite3_bind_int64(st.get(), 1, limit > 0 ? limit : -1);
  std::vector<v1::AuditEntry> out;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    v1::AuditEntry& e = out.emplace_back();
    e.set_entry_id(static_cast<uint64_t>(sqlite3_column_int64(st.get(), 0)));
    e.set_at_unix_ns(sqlite3_column_int64(st.get(), 1));
    e.set_operator_name(ColumnText(st.get(), 2));
    e.set_peer(ColumnText(st.get(), 3));
    e.set_action(ColumnText(st.get(), 4));
    e.set_target(ColumnText(st.get(), 5));
    e.set_reason(ColumnText(st.get(), 6));
    e.set_request(ColumnText(st.get(), 7));
    e.set_ok(sqlite3_column_int(st.get(), 8) != 0);
    e.set_result(ColumnText(st.get(), 9));
  }
  if (rc != SQLITE_DONE) return Error(rc, "reading the audit log");
  return out;
}

}  // namespace fairwatch::controller
