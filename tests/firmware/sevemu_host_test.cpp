// sevemu-host, run as a user runs it, against a temporary platform directory.
#include "fw_harness.h"

#include "firmware/amd_cert.h"
#include "firmware/cert_chain.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

using namespace sevemu;
using namespace sevemu::test;

namespace {

struct Run {
    int rc;
    std::string out;
    std::string err;
    std::vector<std::string> err_lines() const
    {
        std::vector<std::string> lines;
        std::istringstream in(err);
        for (std::string l; std::getline(in, l);)
            lines.push_back(l);
        return lines;
    }
};

std::string slurp(fs::path const& p)
{
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string quote(std::string const& s) { return "'" + s + "'"; }

struct Host {
    TempDir tmp { "host" };
    fs::path platform = tmp.path / "platform";

    Run run(std::string const& args, std::string const& env = "")
    {
        fs::path out = tmp.path / "stdout", err = tmp.path / "stderr";
        std::string cmd = env + " " + quote(SEVEMU_HOST_BIN) + " " + args + " >" + quote(out.string()) + " 2>" + quote(err.string());
        int status = std::system(cmd.c_str());
        Run r { WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err) };
        // The top-level handler's line means a bug surfaced as an exception: never in a test.
        CHECK(r.err.find("internal error") == std::string::npos);
        CHECK(r.rc != 70);
        return r;
    }
    Run on_platform(std::string const& args) { return run("--platform " + quote(platform.string()) + " " + args); }
};

Bytes file_bytes(fs::path const& p)
{
    std::string s = slurp(p);
    return Bytes(s.begin(), s.end());
}

} // namespace

TEST_CASE("sevemu-host status, human and --json", "[host]")
{
    Host h;
    auto r = h.on_platform("status");
    REQUIRE(r.rc == 0);
    CHECK(r.err.empty());
    CHECK(r.out.find("Platform state:     INIT") != std::string::npos);
    CHECK(r.out.find("Firmware API:       1.51") != std::string::npos);
    auto j = h.on_platform("--json status");
    REQUIRE(j.rc == 0);
    auto doc = nlohmann::json::parse(j.out);
    CHECK(doc["state"] == "INIT");
    CHECK(doc["api_major"] == 1);
    CHECK(doc["owner"] == "self");
    CHECK(fs::exists(h.platform / "chip.id"));
    // $SEVEMU_PLATFORM is the default platform directory.
    auto e = h.run("--json status", "SEVEMU_PLATFORM=" + quote(h.platform.string()));
    REQUIRE(e.rc == 0);
    CHECK(nlohmann::json::parse(e.out)["platform"] == h.platform.string());
}

TEST_CASE("sevemu-host export --full writes a chain that verifies to sevemu's test ARK", "[host]")
{
    Host h;
    fs::path out = h.tmp.path / "certs";
    auto r = h.on_platform("export --full " + quote(out.string()));
    REQUIRE(r.rc == 0);
    for (char const* f : { "pdh.cert", "pek.cert", "oca.cert", "cek.cert", "ask.cert", "ark.cert" })
        CHECK(fs::exists(out / f));
    auto ark = AmdCert::parse(file_bytes(out / "ark.cert"));
    auto ask = AmdCert::parse(file_bytes(out / "ask.cert"));
    auto cek = SevCert::parse(file_bytes(out / "cek.cert"));
    auto pek = SevCert::parse(file_bytes(out / "pek.cert"));
    auto oca = SevCert::parse(file_bytes(out / "oca.cert"));
    auto pdh = SevCert::parse(file_bytes(out / "pdh.cert"));
    REQUIRE(ark);
    REQUIRE(ask);
    REQUIRE(cek);
    REQUIRE(pek);
    REQUIRE(oca);
    REQUIRE(pdh);
    CHECK(ark->modulus_bits() == 4096); // Milan: RSA-4096 roots
    SevChain chain { *ark, *ask, *cek, *oca, *pek, *pdh };
    auto v = verify_chain(chain, true);
    REQUIRE(v);
    CHECK(v->amd_rooted);
    CHECK_FALSE(v->amd_product.has_value()); // never one of AMD's roots
    // Without --full: the firmware's export only (CEK unsigned, no AMD certificates).
    fs::path small = h.tmp.path / "small";
    REQUIRE(h.on_platform("--json export " + quote(small.string())).rc == 0);
    CHECK_FALSE(fs::exists(small / "ark.cert"));
    CHECK(SevCert::parse(file_bytes(small / "cek.cert"))->slot_empty(0));
    CHECK(file_bytes(small / "pdh.cert") == file_bytes(out / "pdh.cert"));
}

TEST_CASE("sevemu-host pek-gen, pdh-gen, get-id, ok", "[host]")
{
    Host h;
    fs::path a = h.tmp.path / "a", b = h.tmp.path / "b", c = h.tmp.path / "c";
    REQUIRE(h.on_platform("--cpu EPYC export " + quote(a.string())).rc == 0);
    REQUIRE(h.on_platform("--cpu EPYC pdh-gen").rc == 0);
    REQUIRE(h.on_platform("--cpu EPYC export " + quote(b.string())).rc == 0);
    CHECK(file_bytes(a / "pdh.cert") != file_bytes(b / "pdh.cert"));
    CHECK(file_bytes(a / "pek.cert") == file_bytes(b / "pek.cert"));
    REQUIRE(h.on_platform("--cpu EPYC pek-gen").rc == 0);
    REQUIRE(h.on_platform("--cpu EPYC export " + quote(c.string())).rc == 0);
    CHECK(file_bytes(c / "pek.cert") != file_bytes(b / "pek.cert"));
    CHECK(SevCert::parse(file_bytes(b / "pek.cert"))->api_minor() == 17); // Naples: API 0.17

    auto id1 = h.on_platform("get-id");
    auto id2 = h.on_platform("--json get-id");
    REQUIRE(id1.rc == 0);
    CHECK(id1.out.size() == 129); // 64 bytes in hex + newline
    CHECK(nlohmann::json::parse(id2.out)["id"] == id1.out.substr(0, 128));

    auto ok = h.on_platform("ok");
    CHECK(ok.rc == 0);
    CHECK(ok.out.find("FAIL") == std::string::npos);
    CHECK(ok.out.find("[ PASS ] Platform certificate chain") != std::string::npos);
}

TEST_CASE("sevemu-host pek-csr / pek-cert-import / reset: ownership", "[host]")
{
    Host h;
    fs::path csr = h.tmp.path / "pek.csr";
    REQUIRE(h.on_platform("pek-csr " + quote(csr.string())).rc == 0);
    auto pek = SevCert::parse(file_bytes(csr));
    REQUIRE(pek);
    CHECK(pek->slot_empty(0));
    // The owner signs the CSR with its OCA.
    auto oca_key = p384_generate();
    auto oca = SevCert::make_ec(0, 0, SevUsage::OCA, SevAlgo::ECDSA_SHA256, oca_key->get());
    CertSigner signer { SevUsage::OCA, SevAlgo::ECDSA_SHA256, std::move(*oca_key) };
    REQUIRE(oca->sign(0, signer));
    REQUIRE(pek->sign(0, signer));
    fs::path pek_file = h.tmp.path / "pek.signed", oca_file = h.tmp.path / "oca.cert";
    REQUIRE(write_file_atomic(pek_file, pek->serialize()));
    REQUIRE(write_file_atomic(oca_file, oca->serialize()));
    auto imp = h.on_platform("pek-cert-import " + quote(pek_file.string()) + " " + quote(oca_file.string()));
    REQUIRE(imp.rc == 0);
    CHECK(nlohmann::json::parse(h.on_platform("--json status").out)["owner"] == "external");
    auto again = h.on_platform("pek-cert-import " + quote(pek_file.string()) + " " + quote(oca_file.string()));
    CHECK(again.rc == 1);
    REQUIRE(again.err_lines().size() == 1);
    CHECK(again.err_lines()[0] == "sevemu-host: SEV command PEK_CERT_IMPORT failed: ALREADY_OWNED (0x05)");
    REQUIRE(h.on_platform("reset").rc == 0);
    CHECK(nlohmann::json::parse(h.on_platform("--json status").out)["owner"] == "self");
    fs::path csr2 = h.tmp.path / "pek2.csr";
    REQUIRE(h.on_platform("pek-csr " + quote(csr2.string())).rc == 0);
    CHECK(file_bytes(csr2) != file_bytes(csr)); // a new identity after the factory reset
}

TEST_CASE("sevemu-host: bad arguments are one line on stderr and a non-zero exit", "[host]")
{
    Host h;
    for (std::string args : { "", "bogus", "pek-csr", "--cpu Foo status", "pek-cert-import /nonexistent/a /nonexistent/b",
             "export", "status extra", "--platform" }) {
        INFO("args: " << args);
        auto r = h.on_platform(args);
        CHECK(r.rc != 0);
        CHECK(r.out.empty());
        CHECK(r.err_lines().size() == 1);
        CHECK(r.err.rfind("sevemu-host: ", 0) == 0);
    }
    // A platform directory that cannot be created.
    auto r = h.run("--platform /proc/sevemu-no status");
    CHECK(r.rc == 1);
    CHECK(r.err_lines().size() == 1);
    // --help is not an error.
    CHECK(h.run("--help").rc == 0);
    // The unknown command is named.
    auto frob = h.on_platform("frob");
    CHECK(frob.rc != 0);
    CHECK(frob.err == "sevemu-host: unknown command 'frob' (see --help)\n");
    CHECK(h.on_platform("--cpu EPYC --json frob status").err == "sevemu-host: unknown command 'frob' (see --help)\n");
    // An empty --platform is an error, not the default directory.
    auto empty = h.run("--platform '' status", "SEVEMU_PLATFORM=" + quote((h.tmp.path / "default").string()));
    CHECK(empty.rc == 1);
    CHECK(empty.err == "sevemu-host: --platform '': empty directory name (omit the option for the default directory)\n");
    CHECK_FALSE(fs::exists(h.tmp.path / "default"));
    // Certificates to import that are directories, devices or larger than Linux's blob limit.
    auto dir = h.on_platform("pek-cert-import " + quote(h.tmp.path.string()) + " " + quote(h.tmp.path.string()));
    CHECK(dir.rc != 0);
    CHECK(dir.err_lines().size() == 1);
    {
        std::ofstream(h.tmp.path / "big.cert").close();
        fs::resize_file(h.tmp.path / "big.cert", 0x4001);
    }
    auto big = h.on_platform("pek-cert-import " + quote((h.tmp.path / "big.cert").string()) + " "
        + quote((h.tmp.path / "big.cert").string()));
    CHECK(big.rc == 1);
    CHECK(big.err.find("big.cert: larger than the 16 KiB limit") != std::string::npos);
    // An export into a path that is a file, or into /dev/null: one line, nothing replaced.
    auto to_null = h.on_platform("export /dev/null");
    CHECK(to_null.rc == 1);
    CHECK(to_null.err_lines().size() == 1);
    CHECK(fs::is_character_file("/dev/null"));
    CHECK(h.on_platform("export ''").err == "sevemu-host: export '': empty directory name\n");
}

TEST_CASE("sevemu-host export verifies the chain it exports: a damaged ARK or ASK fails and writes nothing", "[host]")
{
    Host h;
    fs::path good = h.tmp.path / "good";
    REQUIRE(h.on_platform("export --full " + quote(good.string())).rc == 0);
    fs::path roots = h.platform / "roots" / "milan";
    for (char const* name : { "ask.cert", "ark.cert", "cek.cert" }) {
        INFO(name);
        Bytes original = file_bytes(roots / name);
        Bytes bad = original;
        // Inside the signature, so it still parses but no longer verifies: an AMD certificate
        // ends with it; an SEV certificate's first signature (the ASK's) starts at 0x41C.
        bad[std::string(name) == "cek.cert" ? 0x430 : bad.size() - 9] ^= 0x01;
        REQUIRE(write_file_atomic(roots / name, bad));
        fs::path out = h.tmp.path / (std::string("out-") + name);
        auto r = h.on_platform("export --full " + quote(out.string()));
        CHECK(r.rc == 1);
        CHECK(r.err_lines().size() == 1);
        CHECK(r.err.find("does not verify") != std::string::npos);
        CHECK(r.err.find("nothing written") != std::string::npos);
        CHECK_FALSE(fs::exists(out));
        // Into an existing directory with an earlier export: left exactly as it was.
        auto again = h.on_platform("export --full " + quote(good.string()));
        CHECK(again.rc == 1);
        CHECK(file_bytes(good / name) == original);
        REQUIRE(write_file_atomic(roots / name, original));
    }
    // The chain an export writes is the one sevemu-owner verify-chain accepts.
    fs::path ok = h.tmp.path / "ok";
    REQUIRE(h.on_platform("export --full " + quote(ok.string())).rc == 0);
    auto load = [&](char const* n) { return file_bytes(ok / n); };
    SevChain c { AmdCert::parse(load("ark.cert")).value(), AmdCert::parse(load("ask.cert")).value(),
        SevCert::parse(load("cek.cert")).value(), SevCert::parse(load("oca.cert")).value(),
        SevCert::parse(load("pek.cert")).value(), SevCert::parse(load("pdh.cert")).value() };
    CHECK(verify_chain(c, true));
}

TEST_CASE("sevemu-host: a killed writer's temporary files are cleaned up at the next open", "[host]")
{
    Host h;
    REQUIRE(h.on_platform("status").rc == 0);
    // A PID that has ended (fork, exit, reap), as a process killed during a write.
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        ::_exit(0);
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);
    std::string dead = std::to_string(pid);
    fs::create_directories(h.platform / "roots" / "milan");
    std::vector<fs::path> litter { h.platform / (".nv.bin.tmp." + dead), h.platform / (".chip.id.tmp." + dead),
        h.platform / (".init_ex_nv.bin.tmp." + dead), h.platform / "roots" / "milan" / (".ask.pem.tmp." + dead) };
    for (auto const& p : litter)
        std::ofstream(p) << "torn";
    // A live writer's file (this test process) is left alone.
    fs::path live = h.platform / (".nv.bin.tmp." + std::to_string(::getpid()));
    std::ofstream(live) << "in flight";
    REQUIRE(h.on_platform("status").rc == 0);
    for (auto const& p : litter)
        CHECK_FALSE(fs::exists(p));
    CHECK(fs::exists(live));
}

TEST_CASE("sevemu-host: a damaged NV store is erased with a warning, as the driver retries INIT", "[host]")
{
    Host h;
    fs::path a = h.tmp.path / "a", b = h.tmp.path / "b";
    REQUIRE(h.on_platform("export " + quote(a.string())).rc == 0);
    Bytes nv = file_bytes(h.platform / "nv.bin");
    nv[7] ^= 0xFF;
    REQUIRE(write_file_atomic(h.platform / "nv.bin", nv));
    auto r = h.on_platform("export " + quote(b.string()));
    CHECK(r.rc == 0);
    CHECK(r.err.find("damaged") != std::string::npos);
    CHECK(file_bytes(a / "pek.cert") != file_bytes(b / "pek.cert"));
}

TEST_CASE("sevemu-host --init-ex keeps the NV area in DIR/init_ex_nv.bin, as Linux's init_ex_path", "[host]")
{
    Host h;
    fs::path a = h.tmp.path / "a", b = h.tmp.path / "b", c = h.tmp.path / "c";
    REQUIRE(h.on_platform("--init-ex export " + quote(a.string())).rc == 0);
    fs::path nv = h.platform / "init_ex_nv.bin";
    REQUIRE(fs::exists(nv));
    CHECK(fs::file_size(nv) == 0x8000);
    CHECK(file_bytes(nv) != Bytes(0x8000, 0xFF));
    CHECK_FALSE(fs::exists(h.platform / "nv.bin")); // the SPI flash was not used
    REQUIRE(h.on_platform("--init-ex export " + quote(b.string())).rc == 0);
    CHECK(file_bytes(a / "pdh.cert") == file_bytes(b / "pdh.cert")); // persistent through the file
    REQUIRE(h.on_platform("--init-ex pdh-gen").rc == 0);
    REQUIRE(h.on_platform("--init-ex export " + quote(c.string())).rc == 0);
    CHECK(file_bytes(c / "pdh.cert") != file_bytes(b / "pdh.cert"));
    CHECK(file_bytes(c / "pek.cert") == file_bytes(b / "pek.cert"));
    // The SPI identity is a different one.
    fs::path spi = h.tmp.path / "spi";
    REQUIRE(h.on_platform("export " + quote(spi.string())).rc == 0);
    CHECK(file_bytes(spi / "pek.cert") != file_bytes(c / "pek.cert"));
    // Damage: erased by the firmware, rewritten by the driver, a new identity with a warning.
    Bytes img = file_bytes(nv);
    img[0x100] ^= 1;
    REQUIRE(write_file_atomic(nv, img));
    fs::path d = h.tmp.path / "d";
    auto r = h.on_platform("--init-ex export " + quote(d.string()));
    CHECK(r.rc == 0);
    CHECK(r.err.find("damaged") != std::string::npos);
    CHECK(file_bytes(d / "pek.cert") != file_bytes(c / "pek.cert"));
    // A factory reset erases it.
    REQUIRE(h.on_platform("--init-ex reset").rc == 0);
    CHECK(file_bytes(nv) == Bytes(0x8000, 0xFF));
    // A file of the wrong size is a user's mistake: one line.
    REQUIRE(write_file_atomic(nv, Bytes(10, 0)));
    auto bad = h.on_platform("--init-ex status");
    CHECK(bad.rc == 1);
    CHECK(bad.err_lines().size() == 1);
}
