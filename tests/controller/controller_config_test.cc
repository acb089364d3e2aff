#include <fstream>

#include "controller/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/controller/test_util.h"

namespace fairwatch::controller {
namespace {

using ::fairwatch::controller::testing::TempDir;
using ::testing::HasSubstr;

class ControllerConfigTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    std::string path = dir_.Join("controller.conf");
    std::ofstream(path) << text;
    return path;
  }
  TempDir dir_;
};

TEST_F(ControllerConfigTest, DefaultsFillEveryZeroField) {
  ConfigOverrides overrides;
  overrides.insecure_plaintext = true;
  absl::StatusOr<v1::ControllerConfig> config = LoadControllerConfig("", overrides);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen_address(), "127.0.0.1:7400");
  EXPECT_EQ(config->database_path(), "/var/lib/fairwatch/controller.db");
  EXPECT_EQ(config->window_intervals(), 5u);
  EXPECT_EQ(config->history_reports(), 120u);
  EXPECT_EQ(config->max_message_bytes(), 4u * 1024 * 1024);
  EXPECT_EQ(config->host_stale_ms(), 600000u);
  EXPECT_EQ(config->metrics_address(), "127.0.0.1:9478");
  EXPECT_EQ(config->metrics_tenant_series(), 20000);
  EXPECT_TRUE(config->insecure_plaintext());
}

TEST_F(ControllerConfigTest, FlagsOverrideTheFile) {
  const std::string path = Write(
      "listen_address: \"0.0.0.0:9000\"\n"
      "database_path: \"/srv/fw.db\"\n"
      "insecure_plaintext: true\n"
      "window_intervals: 10\n");
  ConfigOverrides overrides;
  overrides.listen_address = "127.0.0.1:9001";
  absl::StatusOr<v1::ControllerConfig> config = LoadControllerConfig(path, overrides);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen_address(), "127.0.0.1:9001");
  EXPECT_EQ(config->database_path(), "/srv/fw.db");
  EXPECT_EQ(config->window_intervals(), 10u);
}

TEST_F(ControllerConfigTest, UnknownKeyNamesTheLine) {
  const std::string path = Write("insecure_plaintext: true\nlisten_adress: \"x:1\"\n");
  absl::Status status = LoadControllerConfig(path, {}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(path + ":2:"));
  EXPECT_THAT(status.message(), HasSubstr("listen_adress"));
}

TEST_F(ControllerConfigTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadControllerConfig(dir_.Join("absent.conf"), {}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ControllerConfigTest, InvalidSettingsSayWhatIsWrong) {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"insecure_plaintext: true window_intervals: 120", "must be less than history_reports"},
      {"insecure_plaintext: true window_intervals: 10 history_reports: 10",
       "must be less than history_reports"},
      {"insecure_plaintext: true history_reports: 1", "at least 2 reports"},
      {"insecure_plaintext: true history_reports: 1000000", "at most"},
      {"insecure_plaintext: true max_message_bytes: 100", "max_message_bytes is 100"},
      {"insecure_plaintext: true listen_address: \"localhost\"", "is not host:port"},
      {"insecure_plaintext: true listen_address: \"localhost:http\"", "no valid port"},
      {"insecure_plaintext: true listen_address: \"unix:\"", "no socket path"},
      {"", "TLS needs both tls.cert_file and tls.key_file"},
      {"tls { cert_file: \"/c.pem\" }", "TLS needs both"},
      {"insecure_plaintext: true tls { cert_file: \"/c\" key_file: \"/k\" }", "choose one"},
      {"tls { cert_file: \"/c\" key_file: \"/k\" require_client_cert: true }", "tls.ca_file"},
      {"insecure_plaintext: true metrics_address: \"9478\"", "metrics_address"},
      {"insecure_plaintext: true metrics_tenant_series: -2", "metrics_tenant_series"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    absl::Status status = LoadControllerConfig(Write(c.text), {}).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr(c.message));
  }
}

TEST_F(ControllerConfigTest, EmptyFlagValuesAreRejected) {
  ConfigOverrides overrides;
  overrides.insecure_plaintext = true;
  overrides.listen_address = "";
  EXPECT_THAT(LoadControllerConfig("", overrides).status().message(), HasSubstr("--listen"));
  overrides.listen_address.reset();
  overrides.database_path = "";
  EXPECT_THAT(LoadControllerConfig("", overrides).status().message(), HasSubstr("--db"));
}

TEST_F(ControllerConfigTest, AcceptedAddressForms) {
  for (const char* address : {"127.0.0.1:0", "[::1]:7400", "unix:/run/fw.sock", "0.0.0.0:7400"}) {
    SCOPED_TRACE(address);
    ConfigOverrides overrides;
    overrides.insecure_plaintext = true;
    overrides.listen_address = address;
    EXPECT_TRUE(LoadControllerConfig("", overrides).ok());
  }
}

TEST_F(ControllerConfigTest, SummaryNamesTheEssentials) {
  ConfigOverrides overrides;
  overrides.insecure_plaintext = true;
  const std::string summary = SummarizeControllerConfig(*LoadControllerConfig("", overrides));
  EXPECT_THAT(summary, HasSubstr("127.0.0.1:7400"));
  EXPECT_THAT(summary, HasSubstr("plaintext"));
  EXPECT_THAT(summary, HasSubstr("/var/lib/fairwatch/controller.db"));
}

}  // namespace
}  // namespace fairwatch::controller
