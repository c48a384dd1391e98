// Snapshots as a QEMU user takes them (suite 'snapshot'): a bundled guest is stopped at an
// instruction count chosen at random (QMP replay-break, seeded: the seed is printed and
// SEVEMU_SNAPSHOT_SEED=N repeats a run), saved with QMP migrate to file: or exec:, restored in a
// fresh sevemu process with -incoming (file:, exec:, or defer + migrate-incoming), and the serial
// output before the snapshot followed by the restored run's must be exactly what an uninterrupted
// run prints, with the same exit status. Damaged streams are refused with one line; an SEV
// guest's migrate is refused with QEMU's blocker and the guest goes on.
//
// Compile-time paths: SEVEMU_BIN (the emulator) and GUEST_DIR (build/tests/guests).
#include "base/state_stream.h"
#include "base/subprocess.h"
#include "tests/integration/qmp_connection.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <regex>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string guest(std::string const& name) { return std::string(GUEST_DIR) + "/guest-" + name + ".elf"; }

// One scratch directory per test process, removed at exit.
std::string const& scratch()
{
    static std::string dir = [] {
        std::string base = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
        std::string tmpl = base + "/sevemu-snapshot-XXXXXX";
        char* d = ::mkdtemp(tmpl.data());
        REQUIRE(d);
        return std::string(d);
    }();
    static struct Cleanup {
        ~Cleanup() { std::error_code ec; fs::remove_all(dir, ec); }
    } cleanup;
    return dir;
}

std::string path(std::string const& name) { return scratch() + "/" + name; }

std::string read_file(std::string const& p)
{
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

void write_file(std::string const& p, std::string const& bytes)
{
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << bytes;
}

uint32_t seed()
{
    static uint32_t s = [] {
        uint32_t v;
        if (char const* e = std::getenv("SEVEMU_SNAPSHOT_SEED"))
            v = uint32_t(std::strtoul(e, nullptr, 0));
        else
            v = std::random_device {}();
        std::cout << "snapshot test seed: " << v << " (SEVEMU_SNAPSHOT_SEED=" << v << " repeats this run)" << std::endl;
        return v;
    }();
    return s;
}

// Runs a sevemu to its end, within 60 s (a broken restore could leave a guest spinning).
sevemu::ProcessResult run_bounded(std::vector<std::string> const& argv)
{
    static int n = 0;
    std::string out = path("run-" + std::to_string(n) + ".stdout"), err = path("run-" + std::to_string(n) + ".stderr");
    ++n;
    auto p = sevemu::Process::spawn(argv, out, err);
    auto r = p.wait(60000);
    INFO("did not end within 60 s: " << argv.back());
    REQUIRE(r.exited);
    r.out = read_file(out);
    r.err = read_file(err);
    return r;
}

std::vector<std::string> base_args(std::string const& serial_file)
{
    return { SEVEMU_BIN, "-display", "none", "-serial", "file:" + serial_file, "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04", "-m", "16" };
}

// An uninterrupted run: its serial output, exit status and instruction count (-trace machine).
struct Reference {
    std::string out;
    int status {};
    uint64_t instructions {};
};
Reference reference_run(std::string const& elf, std::vector<std::string> extra = {})
{
    static int n = 0;
    std::string out = path("ref-" + std::to_string(n++) + ".out");
    auto argv = base_args(out);
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.insert(argv.end(), { "-kernel", elf, "-trace", "machine" });
    auto r = run_bounded(argv);
    INFO(r.err);
    REQUIRE(r.exited);
    std::smatch m;
    REQUIRE(std::regex_search(r.err, m, std::regex("exit status [0-9]+: ([0-9]+) instructions")));
    return { read_file(out), r.status, std::stoull(m[1]) };
}

// A sevemu in the background with a QMP socket, as a QMP client drives it.
struct Vm : sevemu::testing::QmpConnection {
    sevemu::Process proc;

    explicit Vm(std::vector<std::string> argv, std::string const& sock, std::string const& err_file)
        : proc(start(argv, sock, err_file))
    {
        open(sock, 30);
    }
    static sevemu::Process start(std::vector<std::string> argv, std::string const& sock, std::string const& err_file)
    {
        argv.insert(argv.end(), { "-qmp", "unix:" + sock + ",server=on,wait=off" });
        return sevemu::Process::spawn(argv, {}, err_file);
    }
    // Waits for the event; returns it and removes it (and those before it) from `events`.
    json wait_event(std::string const& name, std::vector<json>* before = nullptr)
    {
        for (;;) {
            for (size_t i = 0; i < events.size(); ++i) {
                if (events[i]["event"] == name) {
                    json e = events[i];
                    if (before)
                        before->insert(before->end(), events.begin(), events.begin() + long(i));
                    events.erase(events.begin(), events.begin() + long(i) + 1);
                    return e;
                }
            }
            json l = line();
            REQUIRE(l.contains("event"));
            events.push_back(l);
        }
    }
    // The MIGRATION events up to the one with `last` status, in order.
    std::vector<std::string> migration_until(std::string const& last)
    {
        std::vector<std::string> seen;
        for (;;) {
            json e = wait_event("MIGRATION");
            seen.push_back(e["data"]["status"]);
            if (seen.back() == last || seen.size() > 8)
                return seen;
        }
    }
    int wait_exit()
    {
        auto r = proc.wait(60000);
        REQUIRE(r.exited);
        return r.status;
    }
};

enum class Transport { File, Exec, Defer };
char const* transport_name(Transport t) { return t == Transport::File ? "file" : t == Transport::Exec ? "exec" : "defer"; }

// Runs `elf` to instruction `icount`, saves it through `transport`, restores it in a fresh
// process and checks the output and status against the uninterrupted run.
void snapshot_and_restore(std::string const& elf, Reference const& ref, uint64_t icount, Transport transport)
{
    static int n = 0;
    std::string tag = std::to_string(n++);
    std::string snap = path("snap-" + tag + ".bin");
    std::string src_out = path("src-" + tag + ".out"), dst_out = path("dst-" + tag + ".out");
    INFO("guest " << elf << " stopped at instruction " << icount << " via " << transport_name(transport));

    // --- The source: -S, replay-break at the chosen count, cont, STOP there; migrate.
    {
        auto argv = base_args(src_out);
        argv.insert(argv.end(), { "-S", "-kernel", elf });
        Vm src(argv, path("src-" + tag + ".sock"), path("src-" + tag + ".err"));
        src.ok("migrate-set-capabilities", { { "capabilities", json::array({ { { "capability", "events" }, { "state", true } } }) } });
        CHECK(src.ok("query-migrate") == json::object());
        src.ok("replay-break", { { "icount", icount } });
        src.ok("cont");
        src.wait_event("STOP");
        CHECK(src.ok("query-replay")["icount"] == icount);
        CHECK(src.ok("query-status")["status"] == "paused");
        std::string uri = transport == Transport::Exec ? "exec:cat > '" + snap + "'" : "file:" + snap;
        src.ok("migrate", { { "uri", uri } });
        auto seen = src.migration_until("completed");
        CHECK(seen == std::vector<std::string> { "setup", "active", "completed" });
        // QEMU's source after a completed migration: "postmigrate", stopped.
        auto st = src.ok("query-status");
        CHECK(st["status"] == "postmigrate");
        CHECK(st["running"] == false);
        auto info = src.ok("query-migrate");
        CHECK(info["status"] == "completed");
        CHECK(info["ram"]["total"] == 16u << 20);
        CHECK(info["ram"]["remaining"] == 0);
        CHECK(info["ram"]["transferred"] == fs::file_size(snap));
        CHECK(info["ram"]["page-size"] == 4096);
        CHECK(info["ram"]["duplicate"].get<uint64_t>() + info["ram"]["normal"].get<uint64_t>() == (16u << 20) / 4096);
        CHECK(info["ram"]["normal"].get<uint64_t>() > 0);
        for (char const* k : { "total-time", "setup-time", "downtime" })
            CHECK(info[k].is_number_integer());
        CHECK(src.error("migrate", { { "uri", "file:" + snap + ".again" } })
            == "Can't migrate the vm that was paused due to previous migration");
        src.ok("quit");
        CHECK(src.wait_exit() == 0);
    }
    std::string before = read_file(src_out);

    // --- The destination: a fresh process, no -kernel.
    int status;
    std::string err;
    if (transport == Transport::Defer) {
        auto argv = base_args(dst_out);
        argv.insert(argv.end(), { "-S", "-incoming", "defer" });
        std::string err_file = path("dst-" + tag + ".err");
        Vm dst(argv, path("dst-" + tag + ".sock"), err_file);
        CHECK(dst.ok("query-status")["status"] == "inmigrate");
        CHECK(dst.ok("query-migrate") == json::object());
        dst.ok("migrate-set-capabilities", { { "capabilities", json::array({ { { "capability", "events" }, { "state", true } } }) } });
        dst.ok("migrate-incoming", { { "uri", "file:" + snap } });
        CHECK(dst.migration_until("completed") == std::vector<std::string> { "setup", "active", "completed" });
        CHECK(dst.error("migrate-incoming", { { "uri", "file:" + snap } }) == "The incoming migration has already been started");
        // -S: loaded and waiting for cont, in "paused" (QEMU's process_incoming_migration_bh
        // without autostart), not "prelaunch".
        CHECK(dst.ok("query-status")["status"] == "paused");
        CHECK(dst.ok("query-migrate") == json { { "status", "completed" } });
        CHECK(dst.ok("query-replay")["icount"] == icount); // the count goes on from the source's
        dst.ok("cont");
        status = dst.wait_exit();
        err = read_file(err_file);
    } else {
        auto argv = base_args(dst_out);
        argv.insert(argv.end(), { "-incoming", transport == Transport::Exec ? "exec:cat '" + snap + "'" : "file:" + snap });
        auto r = run_bounded(argv);
        REQUIRE(r.exited);
        status = r.status;
        err = r.err;
    }
    INFO("destination stderr: " << err);
    CHECK(status == ref.status);
    CHECK(before + read_file(dst_out) == ref.out);
}

// The guests of the acceptance list: integer work (hash, sort, strings), exceptions and PIC/PIT/
// UART interrupts (irq), SSE2 doubles (fp), SSE3..SSE4.2 (sse4).
std::vector<std::string> const kGuests = { "hash", "sort", "strings", "irq", "fp", "sse4", "hash-nosse" };

// A snapshot of `name` at about its middle, for the damage tests.
std::string make_snapshot(std::string const& name)
{
    std::string elf = guest(name);
    auto ref = reference_run(elf);
    std::string snap = path("damage-base.bin");
    auto argv = base_args(path("damage-src.out"));
    argv.insert(argv.end(), { "-S", "-kernel", elf });
    Vm src(argv, path("damage.sock"), path("damage.err"));
    src.ok("replay-break", { { "icount", ref.instructions / 2 } });
    src.ok("cont");
    src.wait_event("STOP");
    src.ok("migrate", { { "uri", "file:" + snap } });
    for (int i = 0; i < 500 && src.ok("query-migrate")["status"] != "completed"; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(src.ok("query-migrate")["status"] == "completed");
    src.ok("quit");
    src.wait_exit();
    return read_file(snap);
}

void check_refused(std::string const& stream_file, std::string const& needle)
{
    auto argv = base_args(path("refused.out"));
    argv.insert(argv.end(), { "-incoming", "file:" + stream_file });
    auto r = run_bounded(argv);
    INFO("stderr: " << r.err);
    REQUIRE(r.exited);
    CHECK(r.status == 1); // QEMU exits 1 when an incoming migration fails
    // One line, naming the option, the stream and what is wrong.
    REQUIRE(!r.err.empty());
    CHECK(r.err.find('\n') == r.err.size() - 1);
    CHECK(r.err.rfind("sevemu: -incoming file:" + stream_file + ": ", 0) == 0);
    CHECK(r.err.find(needle) != std::string::npos);
    CHECK(read_file(path("refused.out")).empty()); // no guest code ran
}

} // namespace

TEST_CASE("snapshot: each bundled guest stopped at random instruction counts and restored in a fresh process prints what an uninterrupted run prints", "[snapshot]")
{
    std::mt19937_64 rng(seed());
    for (auto const& name : kGuests) {
        std::string elf = guest(name);
        auto ref = reference_run(elf);
        REQUIRE(ref.instructions > 10);
        // Points anywhere in the run (never at its very start), each transport in turn; the irq
        // guest, whose PIC, PIT and UART state changes most often, gets twice as many.
        std::uniform_int_distribution<uint64_t> at(1, ref.instructions - 1);
        for (int round = 0; round < (name == "irq" ? 2 : 1); ++round)
            for (auto t : { Transport::File, Transport::Exec, Transport::Defer })
                snapshot_and_restore(elf, ref, at(rng), t);
    }
}

TEST_CASE("snapshot: cont after postmigrate runs the source's guest on, as QEMU allows", "[snapshot]")
{
    std::string elf = guest("hash");
    auto ref = reference_run(elf);
    std::string out = path("cont.out");
    auto argv = base_args(out);
    argv.insert(argv.end(), { "-S", "-kernel", elf });
    Vm vm(argv, path("cont.sock"), path("cont.err"));
    std::mt19937_64 rng(seed() ^ 0x5eed);
    vm.ok("replay-break", { { "icount", std::uniform_int_distribution<uint64_t>(1, ref.instructions - 1)(rng) } });
    vm.ok("cont");
    vm.wait_event("STOP");
    vm.ok("migrate", { { "uri", "file:" + path("cont.bin") } });
    for (int i = 0; i < 500 && vm.ok("query-status")["status"] != "postmigrate"; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(vm.ok("query-status")["status"] == "postmigrate");
    vm.ok("cont");
    CHECK(vm.wait_exit() == ref.status);
    CHECK(read_file(out) == ref.out);
}

TEST_CASE("snapshot: a truncated, a bit-flipped and a wrong-version stream are each refused with one line", "[snapshot]")
{
    std::string good = make_snapshot("hash");
    REQUIRE(good.size() > 64);
    REQUIRE(good.rfind("SEVEMU-SNAPSHOT\n", 0) == 0);

    std::mt19937_64 rng(seed() ^ 0xda3a);
    std::string truncated = good.substr(0, std::uniform_int_distribution<size_t>(1, good.size() - 1)(rng));
    write_file(path("truncated.bin"), truncated);
    check_refused(path("truncated.bin"), "snapshot");

    std::string flipped = good;
    size_t byte = std::uniform_int_distribution<size_t>(24, good.size() - 10)(rng);
    flipped[byte] = char(flipped[byte] ^ (1 << (rng() % 8)));
    write_file(path("flipped.bin"), flipped);
    INFO("flipped a bit of byte " << byte);
    check_refused(path("flipped.bin"), "snapshot");

    std::string wrong = good;
    wrong[16] = 2; // the stream version (base/state_stream.h), little-endian u32 after the magic
    write_file(path("version.bin"), wrong);
    check_refused(path("version.bin"), "version");

    // A part's section of an unknown layout version, with every CRC right: refused, naming it.
    {
        std::string v = good;
        size_t at = 24; // the first section (base/state_stream.h): tag, name length, name, version
        size_t name_len = uint8_t(v[at + 1]);
        std::string name = v.substr(at + 2, name_len);
        size_t ver_at = at + 2 + name_len;
        uint64_t len = 0;
        for (int i = 7; i >= 0; --i)
            len = (len << 8) | uint8_t(v[ver_at + 4 + size_t(i)]);
        size_t crc_at = ver_at + 12 + size_t(len);
        auto put32 = [&](size_t pos, uint32_t x) {
            for (int i = 0; i < 4; ++i)
                v[pos + size_t(i)] = char(x >> (8 * i));
        };
        put32(ver_at, 0x7777);
        auto crc = [&](size_t from, size_t to) {
            return sevemu::snapshot_crc32(std::span(reinterpret_cast<uint8_t const*>(v.data()) + from, to - from));
        };
        put32(crc_at, crc(at, crc_at));
        put32(v.size() - 4, crc(0, v.size() - 4));
        write_file(path("section-version.bin"), v);
        INFO("section " << name);
        check_refused(path("section-version.bin"), "snapshot section '" + name + "'");
    }

    write_file(path("empty.bin"), "");
    check_refused(path("empty.bin"), "snapshot");

    // The destination must have the source's RAM size, as QEMU requires.
    {
        write_file(path("good.bin"), good);
        std::vector<std::string> argv = { SEVEMU_BIN, "-display", "none", "-serial", "none", "-m", "32", "-incoming",
            "file:" + path("good.bin") };
        auto r = run_bounded(argv);
        INFO("stderr: " << r.err);
        CHECK(r.status == 1);
        CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    }
    // An exec: command that fails, and one that prints garbage.
    for (std::string cmd : { "exit 3", "echo not a snapshot" }) {
        auto argv = base_args(path("refused.out"));
        argv.insert(argv.end(), { "-incoming", "exec:" + cmd });
        auto r = run_bounded(argv);
        INFO("stderr: " << r.err);
        CHECK(r.status == 1);
        CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
        CHECK(r.err.rfind("sevemu: -incoming exec:" + cmd + ": ", 0) == 0);
    }
    // The intact stream loads.
    auto argv = base_args(path("intact.out"));
    argv.insert(argv.end(), { "-incoming", "file:" + path("good.bin") });
    auto r = run_bounded(argv);
    INFO("stderr: " << r.err);
    CHECK(r.status == 33);
}

TEST_CASE("snapshot: QEMU's texts for bad URIs and misplaced migration commands", "[snapshot]")
{
    auto cli = [](std::vector<std::string> extra) {
        std::vector<std::string> argv = { SEVEMU_BIN, "-display", "none", "-serial", "none" };
        argv.insert(argv.end(), extra.begin(), extra.end());
        return run_bounded(argv);
    };
    auto r = cli({ "-incoming", "bogus:x" });
    CHECK(r.status == 1);
    CHECK(r.err == "sevemu: -incoming bogus:x: unknown migration protocol: bogus:x\n");
    r = cli({ "-incoming", "file:/nonexistent/snap.bin" });
    CHECK(r.status == 1);
    CHECK(r.err == "sevemu: -incoming file:/nonexistent/snap.bin: Unable to open /nonexistent/snap.bin: No such file or directory\n");
    // -kernel with -incoming is not loaded, but must be a file that can be read (QEMU reads it).
    r = cli({ "-kernel", "/nonexistent/guest.elf", "-incoming", "defer" });
    CHECK(r.status == 1);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.rfind("sevemu: -kernel /nonexistent/guest.elf", 0) == 0);
    r = cli({ "-incoming", "unix:/tmp/sevemu-migration.sock" });
    CHECK(r.status == 1);
    CHECK(r.err.find("unsupported") != std::string::npos);

    // A running guest (sort, paused at a breakpoint so the test is not racing it).
    std::string elf = guest("sort");
    auto ref = reference_run(elf);
    std::string out = path("errors.out");
    auto argv = base_args(out);
    argv.insert(argv.end(), { "-S", "-kernel", elf });
    Vm vm(argv, path("errors.sock"), path("errors.err"));
    CHECK(vm.ok("query-migrate") == json::object());
    auto caps = vm.ok("query-migrate-capabilities");
    REQUIRE(caps.is_array());
    CHECK(caps.size() == 21); // QEMU 7.2's MigrationCapability
    CHECK(vm.error("migrate-set-capabilities", { { "capabilities", json::array({ { { "capability", "bogus" }, { "state", true } } }) } })
        == "Parameter 'capabilities[0].capability' does not accept value 'bogus'");
    CHECK(vm.error("migrate-set-capabilities", { { "capabilities", json::array({ { { "capability", "events" } } }) } })
        == "Parameter 'capabilities[0].state' is missing");
    CHECK(vm.error("migrate-set-capabilities", { { "capabilities", "events" } }) == "Invalid parameter type for 'capabilities', expected: array");
    vm.ok("migrate-set-capabilities", { { "capabilities", json::array({ { { "capability", "events" }, { "state", true } } }) } });
    for (auto const& c : vm.ok("query-migrate-capabilities"))
        CHECK(c["state"] == (c["capability"] == "events"));
    CHECK(vm.error("migrate-incoming", { { "uri", "file:/tmp/x" } }) == "'-incoming' was not specified on the command line");
    vm.ok("replay-break", { { "icount", ref.instructions / 3 } });
    vm.ok("cont");
    vm.wait_event("STOP");
    CHECK(vm.error("replay-break", { { "icount", 1 } }) == "cannot set breakpoint at the instruction in the past");
    vm.ok("migrate_cancel"); // nothing to cancel: no error, as in QEMU

    // An unknown protocol: QEMU's error, and the job is "failed".
    CHECK(vm.error("migrate", { { "uri", "bogus:x" } }) == "Parameter 'uri' expects a valid migration protocol");
    CHECK(vm.migration_until("failed") == std::vector<std::string> { "setup", "failed" });
    CHECK(vm.ok("query-migrate")["status"] == "failed");
    // A file that cannot be created: the error, "failed" with the reason, the guest as it was.
    CHECK(vm.error("migrate", { { "uri", "file:/nonexistent/dir/snap" } }) == "Unable to open /nonexistent/dir/snap: No such file or directory");
    CHECK(vm.migration_until("failed") == std::vector<std::string> { "setup", "failed" });
    auto info = vm.ok("query-migrate");
    CHECK(info["status"] == "failed");
    CHECK(info["error-desc"] == "Unable to open /nonexistent/dir/snap: No such file or directory");
    CHECK(vm.ok("query-status")["status"] == "paused");

    // migrate_cancel while the job is active: an exec: command that takes its time to read.
    // The guest was paused before, so after the cancel it is in "postmigrate" (QEMU's
    // migration_iteration_finish() for a VM that was not running).
    vm.ok("cont");
    vm.ok("stop");
    vm.ok("migrate", { { "uri", "exec:sleep 30; cat > /dev/null" } });
    CHECK(vm.ok("query-migrate")["status"] == "active");
    CHECK(vm.ok("query-status")["status"] == "finish-migrate");
    CHECK(vm.error("cont") == "Migration is not finalized yet");
    CHECK(vm.error("migrate", { { "uri", "file:/dev/null" } }) == "There's a migration process in progress");
    vm.ok("migrate_cancel");
    CHECK(vm.migration_until("cancelled") == std::vector<std::string> { "setup", "active", "cancelling", "cancelled" });
    CHECK(vm.ok("query-migrate")["status"] == "cancelled");
    CHECK(vm.ok("query-status")["status"] == "postmigrate");
    vm.ok("cont");
    CHECK(vm.wait_exit() == ref.status);
    CHECK(read_file(out) == ref.out);
}

TEST_CASE("snapshot: a running guest's cancelled migration lets it run on", "[snapshot]")
{
    std::string elf = guest("strings");
    auto ref = reference_run(elf);
    std::string out = path("cancel.out");
    auto argv = base_args(out);
    argv.insert(argv.end(), { "-S", "-kernel", elf });
    Vm vm(argv, path("cancel.sock"), path("cancel.err"));
    vm.ok("migrate-set-capabilities", { { "capabilities", json::array({ { { "capability", "events" }, { "state", true } } }) } });
    // Stopped at a breakpoint after a while, then running again when the migration starts.
    vm.ok("replay-break", { { "icount", ref.instructions / 10 } });
    vm.ok("cont");
    vm.wait_event("STOP");
    vm.ok("replay-break", { { "icount", ref.instructions * 9 / 10 } });
    // One write: cont, then migrate at once, so the guest is running when migrate stops it.
    vm.ok("cont");
    vm.ok("migrate", { { "uri", "exec:sleep 30; cat > /dev/null" } });
    vm.ok("migrate_cancel");
    CHECK(vm.migration_until("cancelled") == std::vector<std::string> { "setup", "active", "cancelling", "cancelled" });
    // QEMU restarts a guest that ran before its migration was cancelled.
    vm.wait_event("RESUME");
    vm.wait_event("STOP"); // the second breakpoint
    CHECK(vm.ok("query-replay")["icount"] == ref.instructions * 9 / 10);
    vm.ok("cont");
    CHECK(vm.wait_exit() == ref.status);
    CHECK(read_file(out) == ref.out);
}

TEST_CASE("snapshot: an SEV guest's migrate is refused with QEMU's blocker and the guest keeps running", "[snapshot]")
{
    std::string elf = guest("hash-sev");
    std::vector<std::string> sev = { "-machine", "confidential-guest-support=sev0", "-object",
        "sev-guest,id=sev0,policy=0x1,cbitpos=51,reduced-phys-bits=1", "--platform", path("platform") };
    auto ref = reference_run(elf, sev);
    REQUIRE(ref.status == 33);
    std::string out = path("sev.out");
    auto argv = base_args(out);
    argv.insert(argv.end(), sev.begin(), sev.end());
    argv.insert(argv.end(), { "-S", "-kernel", elf });
    Vm vm(argv, path("sev.sock"), path("sev.err"));
    vm.ok("migrate-set-capabilities", { { "capabilities", json::array({ { { "capability", "events" }, { "state", true } } }) } });
    // Before it runs (launch-secret) an SEV guest cannot migrate at all; afterwards only live.
    CHECK(vm.ok("query-migrate")["blocked-reasons"] == json::array({ "SEV: the guest is in state 'launch-secret'; it migrates once it runs" }));
    // Running: cont, then at once migrate (the guest is far from its end: a breakpoint at 3/4).
    vm.ok("replay-break", { { "icount", ref.instructions * 3 / 4 } });
    vm.ok("cont");
    CHECK(vm.error("migrate", { { "uri", "file:" + path("sev.bin") } })
        == "SEV: an SEV guest is migrated live only (migrate tcp:HOST:PORT); its memory cannot be saved to a snapshot");
    auto st = vm.ok("query-status");
    // Still running, unless it already reached the breakpoint (then it stopped there, and only there).
    if (st["status"] != "running") {
        CHECK(st["status"] == "paused");
        CHECK(vm.ok("query-replay")["icount"] == ref.instructions * 3 / 4);
    }
    CHECK(!fs::exists(path("sev.bin")));
    vm.wait_event("STOP");
    CHECK(!vm.ok("query-migrate").contains("status")); // no migration ever started
    vm.ok("cont");
    CHECK(vm.wait_exit() == ref.status);
    CHECK(read_file(out) == ref.out);
    for (auto const& e : vm.events)
        CHECK(e["event"] != "MIGRATION");
}
