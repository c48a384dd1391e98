#include "base/trace.h"

#include <catch2/catch.hpp>

using namespace sevemu;

TEST_CASE("trace patterns select categories like QEMU's -trace", "[base]")
{
    Trace t(nullptr);
    t.set_capture(true);
    t.enable("psp");
    t.enable("vm*");
    t.emit("psp", "LAUNCH_START");
    t.emit("psp.state", "UNINIT -> INIT");
    t.emit("vmexit", "HLT");
    t.emit("cpu", "not enabled");
    REQUIRE(t.captured().size() == 3);
    CHECK(t.captured()[1] == "UNINIT -> INIT");
    CHECK(glob_match("psp*", "psp"));
    CHECK_FALSE(glob_match("psp", "pspx"));
}
