// An SEV launch as a user drives it, with the three programs and QMP only:
//
//   sevemu-host --platform P export DIR                 the platform's certificates
//   sevemu-owner session --pdh DIR/pdh.cert ...         the owner's GODH + session (base64 files)
//   sevemu -S -qmp ... -object sev-guest,...            launched, measured, paused
//   query-sev, query-sev-launch-measure                 (QMP)
//   sevemu-owner measurement verify --kernel GUEST ...  the owner checks the measurement
//   sevemu-owner secret build ...                       and releases the secret for it
//   sev-inject-launch-secret, cont                      (QMP)
//
// and then the SEV-aware guest (tests/guests/sev.c) prints, on COM1, that it runs with SEV and
// the SHA-256 of the secret it found in its private memory. The expected hash is computed here
// with OpenSSL. Bad inputs on the command line and over QMP are one-line errors.
//
// Compile-time arguments: SEVEMU_BIN, SEVEMU_HOST_BIN, SEVEMU_OWNER_BIN, SEV_GUEST.
#include "base/encoding.h"
#include "base/subprocess.h"
#include "emulator/qmp/qmp_client.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <openssl/sha.h>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

using nlohmann::json;
using sevemu::Bytes;
using sevemu::Process;
using sevemu::run_capture;
namespace fs = std::filesystem;
namespace qmp = sevemu::qmp;
using namespace std::chrono_literals;

namespace {

struct TempDir {
    fs::path path;
    TempDir()
    {
        std::string tmpl = (fs::temp_directory_path() / "sevemu-sev-cli-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir()
    {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string operator/(std::string const& name) const { return (path / name).string(); }
};

std::string read_text(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Bytes read_bytes(std::string const& path)
{
    std::string t = read_text(path);
    return Bytes(t.begin(), t.end());
}

std::string sha256_hex(std::string const& data)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<unsigned char const*>(data.data()), data.size(), d);
    return sevemu::to_hex(std::span<uint8_t const>(d, sizeof d));
}

std::string trim(std::string s)
{
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
        s.pop_back();
    return s;
}

std::vector<std::string> sevemu_argv(TempDir const& t, std::string const& sock, std::string const& sev_object,
    std::vector<std::string> devices = { "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04" })
{
    std::vector<std::string> a = { SEVEMU_BIN, "-S", "-display", "none", "-m", "64M", "-serial", "file:" + t / "serial.txt",
        "-qmp", "unix:" + sock + ",server=on,wait=off", "--platform", t / "platform", "-object", sev_object, "-machine",
        "confidential-guest-support=sev0", "-kernel", SEV_GUEST };
    a.insert(a.end(), devices.begin(), devices.end());
    return a;
}


// sevemu started in the background with its QMP socket, and a client connected to it.
struct Sevemu {
    Process process;
    std::optional<qmp::Client> client;

    Sevemu(TempDir const& t, std::vector<std::string> const& argv, std::string const& sock)
        : process(Process::spawn(argv, {}, t / "stderr.txt"))
    {
        auto c = qmp::Client::connect_unix(sock, 20s);
        if (!c)
            FAIL("sevemu did not serve QMP (" << c.error() << "): " << read_text(t / "stderr.txt"));
        client.emplace(std::move(*c));
    }
    // The command's "return" value; FAILs with the error otherwise.
    json ok(std::string const& name, json const& args = json::object())
    {
        auto r = client->execute(name, args);
        if (!r)
            FAIL(name << ": " << r.error().error_class << ": " << r.error().desc);
        return *r;
    }
    // The command's error description; FAILs when it succeeds.
    std::string error(std::string const& name, json const& args = json::object())
    {
        auto r = client->execute(name, args);
        if (r)
            FAIL(name << " succeeded: " << r->dump());
        CHECK(r.error().error_class == "GenericError");
        return r.error().desc;
    }
    json event(std::string const& name)
    {
        auto e = client->wait_event(name, 60s);
        if (!e)
            FAIL(e.error());
        return *e;
    }
    std::vector<std::string> event_names() const
    {
        std::vector<std::string> names;
        for (auto const& e : client->events())
            names.push_back(e.value("event", ""));
        return names;
    }
    int exit_status()
    {
        auto r = process.wait(60000);
        REQUIRE(r.exited);
        return r.status;
    }
};

} // namespace

TEST_CASE("sev: launch, measure, verify, inject a secret and run, as a user does", "[sev][cli]")
{
    TempDir t;
    // The platform owner exports the platform's certificates.
    auto exp = run_capture({ SEVEMU_HOST_BIN, "--platform", t / "platform", "export", t / "certs" });
    INFO(exp.err);
    REQUIRE(exp.status == 0);

    // The guest owner opens a session for policy 0x1 (no debugging) with the platform's PDH.
    std::string name = t / "owner";
    auto sess = run_capture({ SEVEMU_OWNER_BIN, "session", "--pdh", t / "certs/pdh.cert", "--policy", "1", "--name", name });
    INFO(sess.err);
    REQUIRE(sess.status == 0);

    // The host launches the guest with the owner's files, paused.
    std::string sock = t / "qmp.sock";
    Sevemu vm(t,
        sevemu_argv(t, sock,
            "sev-guest,id=sev0,policy=0x1,cbitpos=51,reduced-phys-bits=1,dh-cert-file=" + name + "_godh.b64,session-file="
                + name + "_session.b64"),
        sock);
    CHECK(vm.ok("query-status")["status"] == "prelaunch");

    auto info = vm.ok("query-sev");
    CHECK(info["enabled"] == true);
    CHECK(info["sev-type"] == "sev");
    CHECK(info["state"] == "launch-secret");
    CHECK(info["policy"] == 1);
    CHECK(info["handle"].get<int64_t>() > 0);

    // The capabilities are the exported certificates: the PDH, then PEK, OCA and CEK.
    auto cap = vm.ok("query-sev-capabilities");
    CHECK(cap["cbitpos"] == 51);
    CHECK(cap["reduced-phys-bits"] == 1);
    CHECK(sevemu::from_base64(cap["pdh"].get<std::string>()) == read_bytes(t / "certs/pdh.cert"));
    Bytes chain = read_bytes(t / "certs/pek.cert");
    for (auto const* f : { "certs/oca.cert", "certs/cek.cert" }) {
        Bytes b = read_bytes(t / f);
        chain.insert(chain.end(), b.begin(), b.end());
    }
    CHECK(sevemu::from_base64(cap["cert-chain"].get<std::string>()) == chain);
    CHECK(sevemu::from_base64(cap["cpu0-id"].get<std::string>())->size() == 64);

    std::string measurement = vm.ok("query-sev-launch-measure")["data"];
    REQUIRE(sevemu::from_base64(measurement)->size() == 48);

    // The owner checks the measurement against the kernel it expects, with the platform's
    // version as query-sev reports it.
    std::vector<std::string> verify = { SEVEMU_OWNER_BIN, "measurement", "verify", "--tik", name + "_tik.bin",
        "--measurement", measurement, "--api-major", std::to_string(info["api-major"].get<int>()), "--api-minor",
        std::to_string(info["api-minor"].get<int>()), "--build", std::to_string(info["build-id"].get<int>()), "--policy",
        "1", "-m", "64M", "--kernel", SEV_GUEST };
    auto ok = run_capture(verify);
    INFO(ok.out << ok.err);
    CHECK(ok.status == 0);
    CHECK(ok.out.find("measurement matches") != std::string::npos);
    // The same kernel with another command line is another launch: the owner refuses.
    auto other = verify;
    other.insert(other.end(), { "--append", "init=/bin/sh" });
    CHECK(run_capture(other).status == 1);

    // The secret, in the guest's format (tests/guests/sev.c): magic, length, reserved, bytes.
    std::string payload = "disk key 7f3a9c1e5b2d8046, delivered only to a measured guest";
    std::string page = std::string("SEVEMUS1") + char(payload.size()) + std::string(3, '\0') + std::string(4, '\0') + payload;
    std::ofstream(t / "secret.bin", std::ios::binary) << page;
    auto built = run_capture({ SEVEMU_OWNER_BIN, "secret", "build", "--tik", name + "_tik.bin", "--tek", name + "_tek.bin",
        "--measurement", measurement, "--secret", t / "secret.bin", "--out-header", t / "hdr.b64", "--out-secret",
        t / "secret.b64" });
    INFO(built.err);
    REQUIRE(built.status == 0);
    std::string header = trim(read_text(t / "hdr.b64")), secret = trim(read_text(t / "secret.b64"));

    // QEMU's errors for a missing address (no OVMF secret area) and undecodable input.
    CHECK(vm.error("sev-inject-launch-secret", { { "packet-header", header }, { "secret", secret } })
        == "SEV: no secret area found in OVMF, gpa must be specified.");
    CHECK(vm.error("sev-inject-launch-secret", { { "packet-header", "%%%" }, { "secret", secret }, { "gpa", 0x800000 } })
        == "SEV: Failed to decode sequence header");
    CHECK(vm.error("sev-inject-launch-secret", { { "packet-header", header }, { "gpa", 0x800000 } })
        == "Parameter 'secret' is missing");
    // QEMU's uint64 visitor takes a negative integer modulo 2^64 (qobject-input-visitor.c) and
    // refuses only what is not an integer.
    CHECK(vm.error("sev-inject-launch-secret", { { "packet-header", header }, { "secret", secret }, { "gpa", 1.5 } })
        == "Parameter 'gpa' expects uint64");
    CHECK(vm.ok("sev-inject-launch-secret", { { "packet-header", header }, { "secret", secret }, { "gpa", 0x800000 } })
        == json::object());

    // What the hypervisor sees of the secret page: ciphertext (pmemsave takes guest-physical).
    std::string dump = t / "secret-page.bin";
    CHECK(vm.ok("pmemsave", { { "val", 0x800000 }, { "size", 4096 }, { "filename", dump } }) == json::object());
    std::string seen = read_text(dump);
    CHECK(seen.size() == 4096);
    CHECK(seen.find("SEVEMUS1") == std::string::npos);
    CHECK(seen.find(payload) == std::string::npos);

    // The attestation report for a fresh mnonce; a wrong-sized mnonce is QEMU's error.
    auto report = sevemu::from_base64(vm.ok("query-sev-attestation-report", { { "mnonce", "AAECAwQFBgcICQoLDA0ODw==" } })["data"]
                                          .get<std::string>());
    REQUIRE(report.has_value());
    REQUIRE(report->size() >= 16);
    CHECK(Bytes(report->begin(), report->begin() + 16) == *sevemu::from_hex("000102030405060708090a0b0c0d0e0f"));
    CHECK(vm.error("query-sev-attestation-report", { { "mnonce", "AAECAwQFBgc=" } }) == "SEV: mnonce must be 16 bytes (got 8)");
    CHECK(vm.error("system_reset").find("SEV") != std::string::npos);

    // cont: LAUNCH_FINISH, the guest runs to its isa-debug-exit.
    CHECK(vm.ok("cont") == json::object());
    vm.event("RESUME");
    auto shutdown = vm.event("SHUTDOWN");
    CHECK(shutdown["data"]["guest"] == true);
    CHECK(vm.exit_status() == 33);
    std::string serial = read_text(t / "serial.txt");
    INFO(serial);
    CHECK(serial.find("sev: active, SEV_STATUS=0x1, C-bit 51\n") != std::string::npos);
    CHECK(serial.find("secret: " + std::to_string(payload.size()) + " bytes, sha256 " + sha256_hex(payload) + "\n")
        != std::string::npos);
    CHECK(serial.find("shared page 0x900000: sevemu shared page: hello, hypervisor (hypercall 0)\n") != std::string::npos);
    CHECK(serial.find("sev guest: done\n") != std::string::npos);
}

TEST_CASE("sev: without the owner's files the launch runs without a session; QMP answers the same way", "[sev][cli]")
{
    TempDir t;
    std::string sock = t / "qmp.sock";
    Sevemu vm(t, sevemu_argv(t, sock, "sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1"), sock);
    auto info = vm.ok("query-sev");
    CHECK(info["policy"] == 1); // QEMU's default policy
    CHECK(info["state"] == "launch-secret");
    CHECK(vm.ok("query-sev-launch-measure").contains("data"));
    CHECK(vm.error("query-sev", { { "bogus", 1 } }) == "Parameter 'bogus' is unexpected");
    // Guest-physical memory the launch never wrote reads as zeros; beyond RAM is an error.
    std::string dump = t / "zero.bin";
    CHECK(vm.ok("pmemsave", { { "val", 0x500000 }, { "size", 64 }, { "filename", dump } }) == json::object());
    CHECK(read_text(dump) == std::string(64, '\0'));
    CHECK(vm.error("pmemsave", { { "val", 64 << 20 }, { "size", 16 }, { "filename", dump } }).find("Invalid addr")
        != std::string::npos);
    CHECK(vm.ok("quit") == json::object());
    CHECK(vm.exit_status() == 0);
}

TEST_CASE("sev: with -no-shutdown the hypervisor inspects the guest's memory after it powered off", "[sev][cli]")
{
    TempDir t;
    std::string sock = t / "qmp.sock";
    // No isa-debug-exit: the guest powers off through ACPI (tests/guests/runtime_bare.c).
    Sevemu vm(t, sevemu_argv(t, sock, "sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1", { "-no-shutdown" }), sock);
    CHECK(vm.ok("cont") == json::object());
    auto shutdown = vm.event("SHUTDOWN");
    CHECK(shutdown["data"]["guest"] == true);
    CHECK(shutdown["data"]["reason"] == "guest-shutdown");
    vm.event("STOP");
    CHECK(vm.event_names() == std::vector<std::string> { "RESUME", "SHUTDOWN", "STOP" });
    CHECK(vm.ok("query-status")["status"] == "shutdown");
    CHECK(vm.error("cont") == "Resetting the Virtual Machine is required");
    CHECK(vm.ok("query-sev")["state"] == "running");
    CHECK(vm.ok("query-sev-launch-measure").contains("data"));
    // The page the guest shared (C-bit clear) is plaintext; its private page is ciphertext.
    std::string shared = t / "shared.bin", priv = t / "private.bin";
    CHECK(vm.ok("pmemsave", { { "val", 0x900000 }, { "size", 4096 }, { "filename", shared } }) == json::object());
    CHECK(vm.ok("pmemsave", { { "val", 0x901000 }, { "size", 4096 }, { "filename", priv } }) == json::object());
    CHECK(read_text(shared).rfind("sevemu shared page: hello, hypervisor", 0) == 0);
    std::string p = read_text(priv);
    CHECK(p.size() == 4096);
    CHECK(p.find("sevemu") == std::string::npos);
    CHECK(vm.ok("quit") == json::object());
    CHECK(vm.exit_status() == 0);
    CHECK(read_text(t / "serial.txt").find("sev guest: done\n") != std::string::npos);
}

TEST_CASE("sev: a bad sev-guest configuration is one error line and exit status 1", "[sev][cli]")
{
    TempDir t;
    auto run = [&](std::string const& object, std::vector<std::string> extra = {}) {
        std::vector<std::string> a = { SEVEMU_BIN, "-display", "none", "-serial", "none", "--platform", t / "platform",
            "-object", object, "-machine", "confidential-guest-support=sev0", "-kernel", SEV_GUEST };
        a.insert(a.end(), extra.begin(), extra.end());
        return run_capture(a);
    };
    auto check_one_line = [](sevemu::ProcessResult const& r, std::string const& needle) {
        INFO(r.err);
        CHECK(r.exited);
        CHECK(r.status == 1);
        CHECK(r.err.rfind("sevemu: ", 0) == 0);
        CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
        CHECK(r.err.find(needle) != std::string::npos);
    };
    check_one_line(run("sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,dh-cert-file=" + t / "missing.b64"),
        "dh-cert-file");
    std::ofstream(t / "bad.b64") << "not base64 !!!\n";
    check_one_line(run("sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,session-file=" + t / "bad.b64"), "not base64");
    // SEV-ES on a model without it (EPYC, Naples): refused before anything is built.
    check_one_line(run("sev-guest,id=sev0,policy=0x5,cbitpos=47,reduced-phys-bits=1", { "-cpu", "EPYC" }),
        "asks for SEV-ES, which CPU model EPYC (Naples) lacks");
    check_one_line(run("sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,handle=7"), "LAUNCH_START failed");
    check_one_line(run("sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1", { "-m", "4G" }), "at most 2048 MiB");
}
