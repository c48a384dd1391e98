// The platform directory: identity, atomic NV writes, the lock between processes.
#include "fw_harness.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace sevemu;
using namespace sevemu::test;

TEST_CASE("The platform directory is created on first use with a chip identity", "[firmware][store]")
{
    TempDir d("store");
    auto dir = d.path / "nested" / "platform";
    auto s = PlatformStore::open(dir);
    REQUIRE(s);
    CHECK(std::filesystem::exists(dir / "chip.id"));
    auto cuk = (*s)->cuk();
    auto again = PlatformStore::open(dir);
    REQUIRE(again);
    CHECK((*again)->cuk() == cuk);
    // An empty SPI area reads as erased flash.
    CHECK(*(*s)->read_nv() == Bytes(0x8000, 0xFF));
}

TEST_CASE("A damaged chip identity is reported as one clear error", "[firmware][store]")
{
    TempDir d("store");
    REQUIRE(PlatformStore::open(d.path));
    REQUIRE(write_file_atomic(d.path / "chip.id", Bytes { 'x', 'y' }));
    auto s = PlatformStore::open(d.path);
    REQUIRE_FALSE(s);
    CHECK(s.error().message.find("chip.id") != std::string::npos);
}

TEST_CASE("The NV image is sealed: bound to the chip, any flipped bit detected", "[firmware][store]")
{
    ChipUniqueKey a {}, b {};
    a[0] = 1;
    b[0] = 2;
    PersistentState st;
    st.pek_priv = Bytes(48, 7);
    st.pek_cert = Bytes(0x824, 9);
    st.ext_owned = true;
    auto img = nv_seal(st, a);
    REQUIRE(img);
    REQUIRE(img->size() == 0x8000);
    auto back = nv_unseal(*img, a);
    REQUIRE(back);
    REQUIRE(back->has_value());
    CHECK(**back == st);
    CHECK_FALSE(nv_unseal(*img, b)); // another chip's image
    for (size_t at : { size_t(0), size_t(0x4000), size_t(0x7FD0), size_t(0x7FFF) }) {
        Bytes bad = *img;
        bad[at] ^= 0x01;
        auto r = nv_unseal(bad, a);
        CHECK_FALSE(r);
        if (!r)
            CHECK(r.error() == NvError::Corrupt);
    }
    auto empty = nv_unseal(nv_erased_image(), a);
    REQUIRE(empty);
    CHECK_FALSE(empty->has_value());
}

TEST_CASE("Two processes on one platform directory never corrupt it", "[firmware][store]")
{
    TempDir d("store-race");
    constexpr int kChildren = 3;
    std::vector<pid_t> kids;
    for (int c = 0; c < kChildren; ++c) {
        pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            // Each process: its own machine on the same platform, regenerating keys repeatedly.
            int rc = 0;
            try {
                TestPlatform p(FirmwareParams::for_model(CpuModel::Milan), d.path);
                for (int i = 0; i < 6 && rc == 0; ++i) {
                    uint16_t s = p.init();
                    if (s == st(Status::SECURE_DATA_INVALID))
                        rc = 2;
                    else if (s != 0)
                        rc = 3;
                    else if (p.run0(CommandId::PEK_GEN) != 0 || p.run0(CommandId::PDH_GEN) != 0)
                        rc = 4;
                    else if (p.run0(CommandId::SHUTDOWN) != 0)
                        rc = 5;
                }
            } catch (...) {
                rc = 6;
            }
            ::_exit(rc);
        }
        kids.push_back(pid);
    }
    for (pid_t k : kids) {
        int status = 0;
        REQUIRE(::waitpid(k, &status, 0) == k);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
    // Whoever wrote last, the store is whole, and every process saw the same chip.
    TestPlatform p(FirmwareParams::for_model(CpuModel::Milan), d.path);
    CHECK(p.init() == 0);
    auto leftovers = std::distance(std::filesystem::directory_iterator(d.path), std::filesystem::directory_iterator {});
    CHECK(leftovers == 3); // lock, chip.id, nv.bin: no temporary files left behind
}

TEST_CASE("sevemu's test roots: generated once, AMD format, never AMD's key IDs", "[firmware][store]")
{
    TempDir d("roots");
    auto s = PlatformStore::open(d.path);
    REQUIRE(s);
    auto chain = (*s)->amd_chain(CpuModel::Naples, 0, 17); // RSA-2048: quick to generate
    REQUIRE(chain);
    CHECK(chain->ark.modulus_bits() == 2048);
    CHECK(chain->ark.serialize().size() == kAmdCertSize2K);
    CHECK(chain->ask.verify(chain->ark));
    CHECK(chain->ark.verify(chain->ark));
    CHECK(sev_cert_validate(chain->cek, chain->ask));
    CHECK_FALSE(known_ark_product(chain->ark.key_id()).has_value());
    std::string id(reinterpret_cast<char const*>(chain->ark.key_id().data()), 15);
    CHECK(id == "sevemu-test-ARK");
    // The same chip's CEK as the firmware derives it.
    auto cek = derive_cek((*s)->cuk());
    auto pub = chain->cek.public_key();
    CHECK(p384_to_amd_point(cek->get())->qx == p384_to_amd_point(pub->get())->qx);
    auto again = (*s)->amd_chain(CpuModel::Naples, 0, 17);
    REQUIRE(again);
    CHECK(again->ark == chain->ark);
    CHECK(again->cek == chain->cek);
}

TEST_CASE("Damaged test roots are reported, not trusted", "[firmware][store]")
{
    TempDir d("roots-bad");
    auto s = PlatformStore::open(d.path);
    REQUIRE(s);
    REQUIRE((*s)->amd_chain(CpuModel::Naples, 0, 17));
    auto ark_path = d.path / "roots" / "naples" / "ark.cert";
    auto ark = *read_file(ark_path);
    ark[0] = 7; // version
    REQUIRE(write_file_atomic(ark_path, ark));
    auto r = (*s)->amd_chain(CpuModel::Naples, 0, 17);
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == StoreError::Kind::Corrupt);
    CHECK(r.error().message.find("ark.cert") != std::string::npos);
}

TEST_CASE("The default platform directory follows $SEVEMU_PLATFORM, then XDG", "[firmware][store]")
{
    char const* old_p = std::getenv("SEVEMU_PLATFORM");
    char const* old_x = std::getenv("XDG_DATA_HOME");
    std::string save_p = old_p ? old_p : "", save_x = old_x ? old_x : "";
    ::setenv("SEVEMU_PLATFORM", "/some/where", 1);
    CHECK(PlatformStore::default_dir() == "/some/where");
    ::unsetenv("SEVEMU_PLATFORM");
    ::setenv("XDG_DATA_HOME", "/xdg", 1);
    CHECK(PlatformStore::default_dir() == "/xdg/sevemu/platform");
    ::unsetenv("XDG_DATA_HOME");
    CHECK(PlatformStore::default_dir().string().ends_with(".local/share/sevemu/platform"));
    if (old_p)
        ::setenv("SEVEMU_PLATFORM", save_p.c_str(), 1);
    if (old_x)
        ::setenv("XDG_DATA_HOME", save_x.c_str(), 1);
}

TEST_CASE("Every CPU model: its API version, ASID count and ES split", "[firmware]")
{
    for (CpuModel m : kAllCpuModels) {
        INFO(cpu_model_name(m));
        auto params = FirmwareParams::for_model(m);
        TestPlatform p(params);
        auto s = p.platform_status();
        CHECK(s.api_major == params.api_major);
        CHECK(s.api_minor == params.api_minor);
        CHECK(s.build == params.build);
        REQUIRE(p.probe() == 0);
        uint32_t h = 0;
        REQUIRE(p.launch_start(0, h) == 0);
        CHECK(p.activate(h, params.max_asid + 1) == st(Status::INVALID_ASID));
        REQUIRE(p.activate(h, params.max_asid) == 0);
    }
}

TEST_CASE("Opening the platform directory removes a killed writer's temporary files, and only those", "[firmware][store]")
{
    TempDir d("store");
    REQUIRE(PlatformStore::open(d.path));
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        ::_exit(0);
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid); // `pid` names no process now, as after a kill -9
    std::filesystem::create_directories(d.path / "roots" / "rome");
    auto dead_nv = temp_path_for(d.path / "nv.bin", pid);
    auto dead_root = temp_path_for(d.path / "roots" / "rome" / "ark.pem", pid);
    auto live = temp_path_for(d.path / "nv.bin", ::getppid());
    for (auto const& p : { dead_nv, dead_root, live })
        REQUIRE(write_file_atomic(p, Bytes { 1, 2, 3 }));
    REQUIRE(PlatformStore::open(d.path));
    CHECK_FALSE(std::filesystem::exists(dead_nv));
    CHECK_FALSE(std::filesystem::exists(dead_root));
    CHECK(std::filesystem::exists(live));
}

TEST_CASE("Platform files that are not regular files or are oversized are reported or treated as damaged", "[firmware][store]")
{
    TempDir d("store");
    CHECK_FALSE(PlatformStore::open(""));
    CHECK(PlatformStore::open("").error().message.find("empty") != std::string::npos);
    auto s = PlatformStore::open(d.path);
    REQUIRE(s);
    // An NV file larger than the 32 KiB area: damaged data (INIT erases it), not a read of it.
    {
        std::ofstream(d.path / "nv.bin").close();
        std::filesystem::resize_file(d.path / "nv.bin", 1ull << 30);
    }
    auto big = (*s)->read_nv();
    REQUIRE(big);
    CHECK(big->empty());
    // A directory where the NV file belongs: an error naming it.
    std::filesystem::remove(d.path / "nv.bin");
    std::filesystem::create_directory(d.path / "nv.bin");
    auto dir = (*s)->read_nv();
    REQUIRE_FALSE(dir);
    CHECK(dir.error().message == (d.path / "nv.bin").string() + ": is a directory");
    // A chip identity that is a FIFO: refused at once, never a blocked open.
    TempDir e("store");
    REQUIRE(::mkfifo((e.path / "chip.id").c_str(), 0600) == 0);
    auto fifo = PlatformStore::open(e.path);
    REQUIRE_FALSE(fifo);
    CHECK(fifo.error().message == (e.path / "chip.id").string() + ": not a regular file (a FIFO)");
}
