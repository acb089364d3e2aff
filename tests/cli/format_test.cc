#include "cli/format.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace fairwatch::cli {
namespace {

TEST(RenderTable, AlignsColumnsAndTrimsTrailingBlanks) {
  const std::string table = RenderTable({{"NAME"}, {"CPU", Align::kRight}, {"NOTE"}},
                                        {{"a", "1.00", ""}, {"longer", "12.50", "x"}});
  EXPECT_EQ(table,
            "NAME      CPU  NOTE\n"
            "a        1.00\n"
            "longer  12.50  x\n");
}

TEST(RenderTable, HeaderOnlyWithoutRows) {
  EXPECT_EQ(RenderTable({{"HOST"}, {"CPUS", Align::kRight}}, {}), "HOST  CPUS\n");
}

TEST(RenderTable, ReplacesControlCharactersFromUntrustedNames) {
  EXPECT_EQ(RenderTable({{"N"}}, {{"evil\033[2Jname\n"}}), "N\nevil?[2Jname?\n");
}

TEST(RenderTable, CountsUtf8CodePointsAsOneColumn) {
  EXPECT_EQ(RenderTable({{"N"}, {"X"}}, {{"\xc3\xa9t\xc3\xa9", "1"}, {"abc", "2"}}),
            "N    X\n\xc3\xa9t\xc3\xa9  1\nabc  2\n");
}

TEST(TruncateMiddle, KeepsBothEnds) {
  EXPECT_EQ(TruncateMiddle("abcdefghij", 10), "abcdefghij");
  EXPECT_EQ(TruncateMiddle("abcdefghijk", 10), "abc...hijk");
  EXPECT_EQ(TruncateMiddle("abcdef", 2), "..");
}

TEST(TruncateMiddle, NeverSplitsAUtf8Character) {
  EXPECT_EQ(TruncateMiddle("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 5),
            "\xc3\xa9...\xc3\xa9");
}

TEST(FormatCoarseDuration, UsesTheLargestWholeUnit) {
  EXPECT_EQ(FormatCoarseDuration(absl::Milliseconds(400)), "0s");
  EXPECT_EQ(FormatCoarseDuration(absl::Seconds(3)), "3s");
  EXPECT_EQ(FormatCoarseDuration(absl::Seconds(59)), "59s");
  EXPECT_EQ(FormatCoarseDuration(absl::Minutes(5) + absl::Seconds(59)), "5m");
  EXPECT_EQ(FormatCoarseDuration(absl::Hours(2)), "2h");
  EXPECT_EQ(FormatCoarseDuration(absl::Hours(50)), "2d");
}

TEST(FormatCoarseDuration, ClampsClockSkewToZero) {
  EXPECT_EQ(FormatCoarseDuration(absl::Seconds(-4)), "0s");
}

TEST(Numbers, FormatCoresPercentSecondsWeight) {
  EXPECT_EQ(FormatCores(1.234), "1.23");
  EXPECT_EQ(FormatCores(0), "0.00");
  EXPECT_EQ(FormatPercent(0.125), "12.5%");
  EXPECT_EQ(FormatPercent(1), "100.0%");
  EXPECT_EQ(FormatSeconds(5), "5s");
  EXPECT_EQ(FormatSeconds(4.94), "4.9s");
  EXPECT_EQ(FormatWeight(0), "1");
  EXPECT_EQ(FormatWeight(2.5), "2.5");
  EXPECT_EQ(FormatDecimal(-0.001, 2), "0");
}

TEST(RenderBar, ClampsAndRounds) {
  EXPECT_EQ(RenderBar(0, 4), "[    ]");
  EXPECT_EQ(RenderBar(0.5, 4), "[##  ]");
  EXPECT_EQ(RenderBar(0.26, 10), "[###       ]");
  EXPECT_EQ(RenderBar(1.7, 4), "[####]");
  EXPECT_EQ(RenderBar(-1, 4), "[    ]");
}

TEST(FormatHostState, ShowsAgeOfLastReport) {
  const absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  const int64_t one_second_ago_ns = absl::ToUnixNanos(now - absl::Seconds(1));
  const int64_t five_minutes_ago_ns = absl::ToUnixNanos(now - absl::Minutes(5));
  EXPECT_EQ(FormatHostState(true, one_second_ago_ns, now), "up 1s ago");
  EXPECT_EQ(FormatHostState(false, five_minutes_ago_ns, now), "down 5m");
  EXPECT_EQ(FormatHostState(false, 0, now), "down");
}

TEST(FormatTimestampUtc, IsRfc3339) {
  EXPECT_EQ(FormatTimestampUtc(absl::FromUnixSeconds(1'700'000'000)), "2023-11-14T22:13:20Z");
}

TEST(EnumNames, AreShort) {
  EXPECT_EQ(LayoutName(v1::CGROUP_LAYOUT_HYBRID), "hybrid");
  EXPECT_EQ(LayoutName(v1::CGROUP_LAYOUT_UNSPECIFIED), "-");
  EXPECT_EQ(SourceName(v1::TENANT_SOURCE_LIBVIRT), "libvirt");
}

v1::CgroupRef Ref(const std::string& hierarchy, const std::string& path) {
  v1::CgroupRef ref;
  ref.set_hierarchy(hierarchy);
  ref.set_path(path);
  return ref;
}

TEST(FormatCgroups, MergesHierarchiesThatShareAPath) {
  google::protobuf::RepeatedPtrField<v1::CgroupRef> cgroups;
  *cgroups.Add() = Ref("cpu", "machine/vm1");
  *cgroups.Add() = Ref("blkio", "machine/vm1");
  *cgroups.Add() = Ref("unified", "machine.slice/vm1");
  EXPECT_EQ(FormatCgroups(cgroups, 100), "cpu+blkio:machine/vm1,unified:machine.slice/vm1");
}

TEST(FormatCgroups, ShortensLongListsInTheMiddle) {
  google::protobuf::RepeatedPtrField<v1::CgroupRef> cgroups;
  *cgroups.Add() = Ref("unified", "machine/qemu-12-very-long-virtual-machine-name.libvirt-qemu");
  EXPECT_EQ(FormatCgroups(cgroups, 30), "unified:machi...e.libvirt-qemu");
}

TEST(FormatCgroups, DashWhenNone) { EXPECT_EQ(FormatCgroups({}, 10), "-"); }

TEST(Numbers, RatesAndDurationsUseSiUnits) {
  EXPECT_EQ(FormatBytesRate(0), "0 B/s");
  EXPECT_EQ(FormatBytesRate(999), "999 B/s");
  EXPECT_EQ(FormatBytesRate(12.5e6), "12.5 MB/s");
  EXPECT_EQ(FormatRate(3200), "3.2k/s");
  EXPECT_EQ(FormatNanos(850), "850ns");
  EXPECT_EQ(FormatNanos(5100), "5.1us");
  EXPECT_EQ(FormatNanos(2.3e9), "2.3s");
}

}  // namespace
}  // namespace fairwatch::cli
