#include <gtest/gtest.h>

#include "agent/config.h"
#include "common/config_file.h"

namespace fairwatch::agent {
namespace {

absl::Status ParseAndValidate(const std::string& text) {
  v1::AgentConfig config;
  absl::Status status = ParseTextConfig(text, "agent.textproto", &config);
  if (!status.ok()) return status;
  ApplyDefaults(&config);
  return Validate(config);
}

TEST(AgentConfig, ValidConfigGetsDefaults) {
  v1::AgentConfig config;
  ASSERT_TRUE(ParseTextConfig("insecure_plaintext: true\ncgroup_parents { path: \"machine\" }\n",
                              "agent.textproto", &config)
                  .ok());
  ApplyDefaults(&config);
  EXPECT_TRUE(Validate(config).ok());
  EXPECT_EQ(config.interval_ms(), 1000u);
  EXPECT_EQ(config.controller_address(), "127.0.0.1:7400");
  EXPECT_EQ(config.cpu_hierarchy(), "auto");
}

TEST(AgentConfig, LibvirtAloneIsASourceAndGetsDefaults) {
  v1::AgentConfig config;
  ASSERT_TRUE(
      ParseTextConfig("insecure_plaintext: true\nlibvirt {}\n", "agent.textproto", &config).ok());
  ApplyDefaults(&config);
  ASSERT_TRUE(Validate(config).ok()) << Validate(config);
  EXPECT_EQ(config.libvirt().uri(), "qemu:///system");
  EXPECT_EQ(config.libvirt().qemu_run_dir(), "/run/libvirt/qemu");
  EXPECT_EQ(config.libvirt().resync_interval_ms(), 30000u);
}

TEST(AgentConfig, NoSourceAndBadLibvirtSettingsAreRejected) {
  absl::Status none = ParseAndValidate("insecure_plaintext: true\n");
  EXPECT_NE(none.message().find("no tenant source"), absl::string_view::npos) << none;
  EXPECT_NE(none.message().find("libvirt"), absl::string_view::npos) << none;
  EXPECT_FALSE(ParseAndValidate("insecure_plaintext: true\nlibvirt { weight: -1 }\n").ok());
  EXPECT_FALSE(
      ParseAndValidate("insecure_plaintext: true\nlibvirt { resync_interval_ms: 10 }\n").ok());
  EXPECT_FALSE(
      ParseAndValidate("insecure_plaintext: true\nlibvirt { domains { weight: 2 } }\n").ok());
  EXPECT_TRUE(ParseAndValidate(
                  "insecure_plaintext: true\nlibvirt { domains { domain: \"web-1\" weight: 2 } }\n")
                  .ok());
}

TEST(AgentConfig, UnknownKeyNamesItsLine) {
  absl::Status status =
      ParseAndValidate("insecure_plaintext: true\n\ncgroup_parentz { path: \"x\" }\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("agent.textproto:3:"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find("cgroup_parentz"), absl::string_view::npos) << status;
}

TEST(AgentConfig, SyntaxErrorNamesItsLine) {
  absl::Status status = ParseAndValidate("interval_ms: 1000\ncgroup_parents { path: \"x\"\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("agent.textproto:3:"), absl::string_view::npos) << status;
}

TEST(AgentConfig, WrongValueTypeIsAnError) {
  absl::Status status = ParseAndValidate("interval_ms: \"fast\"\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find(":1:"), absl::string_view::npos) << status;
}

TEST(AgentConfig, SemanticErrorsNameTheField) {
  struct Case {
    const char* text;
    const char* expect;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"insecure_plaintext: true\n", "no tenant source"},
           {"cgroup_parents { path: \"/abs\" }\n", "relative"},
           {"cgroup_parents { path: \"a/../b\" }\n", "'..'"},
           {"cgroup_parents { path: \"a\" }\ninterval_ms: 5\n", "interval_ms"},
           {"cgroup_parents { path: \"a\" }\ncpu_hierarchy: \"memory\"\n", "cpu_hierarchy"},
           {"cgroup_parents { path: \"a\" weight: -1 }\n", "weight"},
           {"cgroup_parents { path: \"a\" }\ninsecure_plaintext: true\ntls { ca_file: \"x\" }\n",
            "exclusive"},
       }) {
    absl::Status status = ParseAndValidate(c.text);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(status.message().find(c.expect), absl::string_view::npos)
        << c.text << " -> " << status;
  }
}

}  // namespace
}  // namespace fairwatch::agent
