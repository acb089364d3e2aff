#include "controller/store.h"

#include <sqlite3.h>

#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
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

absl::Status SqliteStore::Run(sqlite3_stmt* statement, absl::string_view what) {
  const int rc = sqlite3_step(statement);
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
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", what));
  absl::Status status = [&]() -> absl::Status {
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
  }();
  if (!status.ok()) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return status;
  }
  return Exec("COMMIT", what);
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

}  // namespace fairwatch::controller
