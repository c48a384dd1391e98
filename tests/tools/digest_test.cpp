// `sevemu-owner measurement digest`: the launch digest of a -kernel command line, run as a user
// runs it. (That it equals what the firmware measures in a real sevemu launch is checked with
// the SEV launch in sevemu itself.)
#include "tests/tools/owner_run.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/wait.h>

namespace {

sevemu::testing::OwnerRun run(std::string const& args) { return sevemu::testing::run_owner(args); }

} // namespace

TEST_CASE("measurement digest names the measured pages and follows the command line", "[owner]")
{
    std::string kernel = SEVEMU_GUEST_ELF;
    auto r = run("measurement digest --json -m 64M --kernel " + kernel);
    REQUIRE(r.code == 0);
    auto j = nlohmann::json::parse(r.out);
    std::string digest = j["digest"];
    CHECK(digest.size() == 64);
    REQUIRE(j["measured"].size() >= 1);
    // The low page with the memory map, information structure and GDT comes first.
    CHECK(j["measured"][0]["gpa"] == 0x9000);
    for (auto const& m : j["measured"]) {
        CHECK(m["gpa"].get<uint64_t>() % 4096 == 0);
        CHECK(m["size"].get<uint64_t>() % 4096 == 0);
    }
    // Deterministic, and bound to everything the loader writes: -append, -m (the memory map).
    CHECK(run("measurement digest -m 64M --kernel " + kernel).out == digest + "\n");
    CHECK(run("measurement digest -m 64M --kernel " + kernel + " --append console=ttyS0").out != digest + "\n");
    CHECK(run("measurement digest -m 128M --kernel " + kernel).out != digest + "\n");
}

TEST_CASE("measurement digest refuses bad input with one line", "[owner]")
{
    auto r = run("measurement digest --kernel /nonexistent/kernel");
    CHECK(r.code != 0);
    CHECK(r.out.find("/nonexistent/kernel") != std::string::npos);
    r = run("measurement digest --kernel " SEVEMU_OWNER_BIN);
    CHECK(r.code != 0);
    CHECK(r.out.find("Multiboot") != std::string::npos);
    r = run("measurement digest -m lots --kernel " SEVEMU_GUEST_ELF);
    CHECK(r.code != 0);
    // sevemu's bounds, not an attempt at 1 EiB of scratch memory.
    r = run("measurement digest -m 1E --kernel " SEVEMU_GUEST_ELF);
    CHECK(r.code == 1);
    CHECK(r.out == "sevemu-owner: -m 1E: too much memory (at most 1T)\n");
    // An SEV launch refuses more than 2 GiB of RAM, so the owner gets no digest for it either.
    r = run("measurement digest -m 4G --kernel " SEVEMU_GUEST_ELF);
    CHECK(r.code == 1);
    CHECK(r.out == "sevemu-owner: -m 4G: sevemu runs SEV guests with at most 2048 MiB of RAM (QUIRKS.md)\n");
    r = run("measurement digest -m 2G --kernel " SEVEMU_GUEST_ELF);
    CHECK(r.code == 0);
    r = run("measurement digest -m 1 --kernel " SEVEMU_GUEST_ELF);
    CHECK(r.code == 1);
    CHECK(r.out.find("too little memory") != std::string::npos);
    // Files checked as sevemu checks them.
    r = run("measurement digest --kernel /tmp");
    CHECK(r.code == 1);
    CHECK(r.out == "sevemu-owner: -kernel /tmp: is a directory\n");
    r = run("measurement digest --kernel /dev/zero");
    CHECK(r.code == 1);
    CHECK(r.out.find("/dev/zero: not a regular file") != std::string::npos);
    r = run("measurement digest --kernel " SEVEMU_GUEST_ELF " --initrd /tmp");
    CHECK(r.code == 1);
    CHECK(r.out.find("-initrd /tmp: is a directory") != std::string::npos);
    r = run("measurement digest --cpu EPYC-Zen9 --kernel " SEVEMU_GUEST_ELF);
    CHECK(r.code != 0);
    CHECK(r.out.find("unknown model") != std::string::npos);
    r = run("measurement verify --tik /dev/null --measurement AAAA --api-major 1 --api-minor 0 --build 1 --policy 0");
    CHECK(r.code != 0);
}
