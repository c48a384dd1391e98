// Tests of sevemu-owner run the real program as a user does (SEVEMU_OWNER_BIN, set by meson).
#pragma once

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <string>
#include <sys/wait.h>

namespace sevemu::testing {

struct OwnerRun {
    int code;
    std::string out; // stdout and stderr together
};

// Runs `sevemu-owner ARGS`. A crash (signal) is never an acceptable outcome, nor is the
// top-level handler's line and status 70 (a bug surfacing as an exception, base/main_guard.h).
inline OwnerRun run_owner(std::string const& args)
{
    INFO("program under test: " SEVEMU_OWNER_BIN " (built by `meson test`, or ninja tools/sevemu-owner/sevemu-owner)");
    REQUIRE(std::filesystem::exists(SEVEMU_OWNER_BIN));
    std::string cmd = std::string(SEVEMU_OWNER_BIN) + " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        out.append(buf, n);
    int status = pclose(p);
    REQUIRE(WIFEXITED(status));
    CHECK(out.find("internal error") == std::string::npos);
    CHECK(WEXITSTATUS(status) != 70);
    return { WEXITSTATUS(status), out };
}

} // namespace sevemu::testing
