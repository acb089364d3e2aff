#include "controller/store.h"

#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/controller/test_util.h"

namespace fairwatch::controller {
namespace {

using ::fairwatch::controller::testing::MakeHello;
using ::fairwatch::controller::testing::MakeInventory;
using ::fairwatch::controller::testing::MakeTenant;
using ::fairwatch::controller::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

// Reads one integer or text value with an independent connection, to check
// what is really on disk.
std::string QueryOne(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* statement = nullptr;
  std::string value = "<error>";
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr) == SQLITE_OK &&
      sqlite3_step(statement) == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(statement, 0);
    value = text == nullptr ? "<null>" : reinterpret_cast<const char*>(text);
  }
  sqlite3_finalize(statement);
  sqlite3_close(db);
  return value;
}

TEST(SqliteStore, CreatesParentDirectoriesSchemaAndWal) {
  TempDir dir;
  const std::string path = dir.Join("a/b/controller.db");
  absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_EQ(*(*store)->SchemaVersion(), 6);
  EXPECT_EQ(SqliteStore::LatestSchemaVersion(), 6);
  EXPECT_EQ(QueryOne(path, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(QueryOne(path, "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('hosts','tenants')"),
            "2");
}

TEST(SqliteStore, MigrationsAreIdempotentAcrossReopen) {
  TempDir dir;
  const std::string path = dir.Join("c.db");
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
  }
  EXPECT_EQ(QueryOne(path, "SELECT COUNT(*) FROM schema_migrations"), "6");
  EXPECT_NE(QueryOne(path, "SELECT applied_unix_ns FROM schema_migrations WHERE version = 1"), "0");
}

TEST(SqliteStore, ReopenKeepsHostsAndTenants) {
  TempDir dir;
  const std::string path = dir.Join("c.db");
  {
    auto store = SqliteStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->RecordHello(MakeHello("h1", 1), kT0).ok());
    ASSERT_TRUE(
        (*store)
            ->RecordInventory("h1", MakeInventory(true, {MakeTenant("vm-1", "web", "acme")}), kT0)
            .ok());
  }
  auto store = SqliteStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<std::vector<StoredHost>> hosts = (*store)->ListHosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].host_id, "h1");
  EXPECT_EQ((*hosts)[0].hostname, "h1.example");
  EXPECT_EQ((*hosts)[0].agent_version, "test-agent");
  absl::StatusOr<std::vector<StoredTenant>> tenants = (*store)->ListTenants("h1");
  ASSERT_TRUE(tenants.ok()) << tenants.status();
  ASSERT_EQ(tenants->size(), 1u);
  EXPECT_EQ((*tenants)[0].tenant_id, "vm-1");
  EXPECT_EQ((*tenants)[0].name, "web");
  EXPECT_EQ((*tenants)[0].account, "acme");
  EXPECT_EQ((*tenants)[0].source, "TENANT_SOURCE_CGROUP_PARENT");
  EXPECT_EQ((*tenants)[0].removed_unix_ns, 0);
}

TEST(SqliteStore, HelloUpsertKeepsFirstSeenAndUpdatesTheRest) {
  TempDir dir;
  auto store = SqliteStore::Open(dir.Join("c.db"));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->RecordHello(MakeHello("h1", 1), kT0).ok());
  v1::Hello upgraded = MakeHello("h1", 2);
  upgraded.set_agent_version("v2");
  ASSERT_TRUE((*store)->RecordHello(upgraded, kT0 + absl::Hours(1)).ok());
  std::vector<StoredHost> hosts = *(*store)->ListHosts();
  ASSERT_EQ(hosts.size(), 1u);
  EXPECT_EQ(hosts[0].agent_version, "v2");
  EXPECT_EQ(hosts[0].first_seen_unix_ns, absl::ToUnixNanos(kT0));
  EXPECT_EQ(hosts[0].last_seen_unix_ns, absl::ToUnixNanos(kT0 + absl::Hours(1)));
}

TEST(SqliteStore, InventoryMarksRemovedAndRevivesReturningTenants) {
  TempDir dir;
  auto opened = SqliteStore::Open(dir.Join("c.db"));
  ASSERT_TRUE(opened.ok());
  SqliteStore& store = **opened;
  const absl::Time t1 = kT0 + absl::Seconds(1);
  const absl::Time t2 = kT0 + absl::Seconds(2);
  const absl::Time t3 = kT0 + absl::Seconds(3);
  ASSERT_TRUE(store
                  .RecordInventory("h1",
                                   MakeInventory(true, {MakeTenant("a", "A"), MakeTenant("b", "B"),
                                                        MakeTenant("c", "C")}),
                                   kT0)
                  .ok());
  ASSERT_TRUE(
      store.RecordInventory("h2", MakeInventory(true, {MakeTenant("a", "other")}), kT0).ok());
  // Full: "c" is gone. Delta: "a" removed. Delta: "c" is back.
  ASSERT_TRUE(store
                  .RecordInventory(
                      "h1", MakeInventory(true, {MakeTenant("a", "A"), MakeTenant("b", "B")}), t1)
                  .ok());
  ASSERT_TRUE(store.RecordInventory("h1", MakeInventory(false, {}, {"a"}), t2).ok());
  ASSERT_TRUE(store.RecordInventory("h1", MakeInventory(false, {MakeTenant("c", "C2")}), t3).ok());

  std::map<std::string, StoredTenant> by_id;
  absl::StatusOr<std::vector<StoredTenant>> h1 = store.ListTenants("h1");
  ASSERT_TRUE(h1.ok()) << h1.status();
  for (StoredTenant& tenant : *h1) by_id[tenant.tenant_id] = tenant;
  ASSERT_EQ(by_id.size(), 3u);
  EXPECT_EQ(by_id["a"].removed_unix_ns, absl::ToUnixNanos(t2));
  EXPECT_EQ(by_id["b"].removed_unix_ns, 0);
  EXPECT_EQ(by_id["b"].last_seen_unix_ns, absl::ToUnixNanos(t1));
  EXPECT_EQ(by_id["c"].removed_unix_ns, 0);
  EXPECT_EQ(by_id["c"].name, "C2");
  EXPECT_EQ(by_id["c"].first_seen_unix_ns, absl::ToUnixNanos(kT0));
  // The other host's tenant with the same id is untouched.
  std::vector<StoredTenant> h2 = *store.ListTenants("h2");
  ASSERT_EQ(h2.size(), 1u);
  EXPECT_EQ(h2[0].removed_unix_ns, 0);
  EXPECT_EQ(store.ListTenants("")->size(), 4u);
}

TEST(SqliteStore, GarbageFileIsReportedAsNotADatabase) {
  TempDir dir;
  const std::string path = dir.Join("c.db");
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 64; ++i) out << "this is not an SQLite database file ";
  }
  absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(store.status().message(), AllOf(HasSubstr(path), HasSubstr("not a database")));
}

TEST(SqliteStore, UncreatableDirectoryNamesThePath) {
  TempDir dir;
  const std::string blocker = dir.Join("file");
  std::ofstream(blocker) << "x";
  absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(blocker + "/sub/c.db");
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(),
              AllOf(HasSubstr("creating directory"), HasSubstr(blocker + "/sub")));
}

TEST(SqliteStore, DirectoryInPlaceOfTheFileIsAnError) {
  TempDir dir;
  std::filesystem::create_directories(dir.Join("c.db"));
  absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(dir.Join("c.db"));
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr(dir.Join("c.db")));
}

TEST(SqliteStore, NewerSchemaIsRefused) {
  TempDir dir;
  const std::string path = dir.Join("c.db");
  ASSERT_TRUE(SqliteStore::Open(path).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "INSERT INTO schema_migrations VALUES (7, 1)", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("schema version 7"));
}

TEST(SqliteStore, EmptyPathIsInvalidArgument) {
  EXPECT_EQ(SqliteStore::Open("").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fairwatch::controller
