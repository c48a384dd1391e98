// The command x state matrix of AMD-ASPFW sev_mcmd.c (each handler's state checks), written out here
// independently of the firmware's
// dispatch table: every command in every reachable platform/guest state, through the mailbox.
// A command in a state AMD-ASPFW forbids must fail with INVALID_PLATFORM_STATE (0x01) or
// INVALID_GUEST_STATE (0x02) and change nothing; in a permitted state it must not fail with
// either of those.
#include "fw_harness.h"

#include <catch2/catch.hpp>
#include <set>

using namespace sevemu;
using namespace sevemu::test;

namespace {

enum class Scene { Uninit, Init, LUpdate, LSecret, Running };
char const* scene_name(Scene s)
{
    switch (s) {
    case Scene::Uninit:
        return "platform UNINIT";
    case Scene::Init:
        return "platform INIT";
    case Scene::LUpdate:
        return "WORKING, guest LUPDATE";
    case Scene::LSecret:
        return "WORKING, guest LSECRET";
    case Scene::Running:
        return "WORKING, guest RUNNING";
    }
    return "?";
}

constexpr int P_U = 1, P_I = 2, P_W = 4, P_ANY = 7;
constexpr int G_LU = 1, G_LS = 2, G_RUN = 4, G_ANY = 7; // the guest states reachable without SEND/RECEIVE

struct Row {
    uint32_t id = 0;
    char const* name;
    int platform; // P_* mask AMD-ASPFW permits
    int guest;    // G_* mask; 0 = not a command on an existing guest
};

// AMD-ASPFW (Genoa 1.55) sev_mcmd.c state checks.
Row const kMatrix[] = {
    { 0x01, "INIT", P_U, 0 },
    { 0x02, "SHUTDOWN", P_ANY, 0 },
    { 0x03, "PLATFORM_RESET", P_U, 0 },
    { 0x04, "PLATFORM_STATUS", P_ANY, 0 },
    { 0x05, "PEK_GEN", P_I, 0 },
    { 0x06, "PEK_CSR", P_I | P_W, 0 },
    { 0x07, "PEK_CERT_IMPORT", P_I, 0 },
    { 0x08, "PDH_CERT_EXPORT", P_I | P_W, 0 },
    { 0x09, "PDH_GEN", P_I | P_W, 0 },
    { 0x0A, "DF_FLUSH", P_ANY, 0 },
    { 0x0C, "GET_ID", P_ANY, 0 },
    { 0x0D, "INIT_EX", P_U, 0 },
    { 0x0E, "NOP", P_ANY, 0 },
    { 0x20, "DECOMMISSION", P_W, G_ANY },
    { 0x21, "ACTIVATE", P_W, G_ANY },
    { 0x22, "DEACTIVATE", P_W, G_ANY },
    { 0x23, "GUEST_STATUS", P_I | P_W, G_ANY },
    { 0x24, "COPY", P_W, G_ANY },
    { 0x25, "ACTIVATE_EX", P_W, G_ANY },
    { 0x30, "LAUNCH_START", P_I | P_W, 0 },
    { 0x31, "LAUNCH_UPDATE_DATA", P_W, G_LU },
    { 0x32, "LAUNCH_UPDATE_VMSA", P_W, G_LU },
    { 0x33, "LAUNCH_MEASURE", P_W, G_LU },
    { 0x34, "LAUNCH_SECRET", P_W, G_LS },
    { 0x35, "LAUNCH_FINISH", P_W, G_LS },
    { 0x36, "ATTESTATION", P_W, G_LS | G_RUN },
    { 0x60, "DBG_DECRYPT", P_W, G_ANY },
    { 0x61, "DBG_ENCRYPT", P_W, G_ANY },
};

// A buffer that is valid in every respect the state checks do not cover, naming guest `h`.
Bytes buffer_for(uint32_t id, uint32_t h)
{
    Bytes b(64, 0);
    auto put32 = [&](size_t off, uint64_t v) { store_le(std::span(b).subspan(off), v, 4); };
    auto put64 = [&](size_t off, uint64_t v) { store_le(std::span(b).subspan(off), v, 8); };
    constexpr uint64_t D = TestPlatform::kData, G = TestPlatform::kGuest;
    switch (id) {
    case 0x0D: put32(0, 0x24); break;
    case 0x06: put64(0, D); put32(8, 0x824); break;
    case 0x07: put64(0, D); put32(8, 0x824); put64(0x10, D + 0x1000); put32(0x18, 0x824); break;
    case 0x08: put64(0, D); put32(8, 0x824); put64(0x10, D + 0x1000); put32(0x18, 0x186C); break;
    case 0x0C: put64(0, D); put32(8, 64); break;
    case 0x20: case 0x22: case 0x23: case 0x35: put32(0, h); break;
    case 0x21: put32(0, h); put32(4, 6); break;
    case 0x24: put32(0, h); put32(4, 4096); put64(8, G); put64(0x10, G + 0x10000); break;
    case 0x25: put32(0, 0x18); put32(4, h); put32(8, 6); put32(0xC, 1); put64(0x10, D); break;
    case 0x30: put32(4, policy::ES); break;
    case 0x31: put32(0, h); put64(8, G); put32(0x10, 4096); break;
    case 0x32: put32(0, h); put64(8, G + 0x20000); put32(0x10, 4096); break;
    case 0x33: put32(0, h); put64(8, D); put32(0x10, 48); break;
    case 0x34: put32(0, h); put64(8, D); put32(0x10, 0x34); put64(0x18, G); put32(0x20, 16); put64(0x28, D + 0x100); put32(0x30, 16); break;
    case 0x36: put32(0, h); put64(8, D); put32(0x20, 0xD0); break;
    case 0x60: case 0x61: put32(0, h); put64(8, G); put64(0x10, D); put32(0x18, 16); break;
    default: break;
    }
    return b;
}

// Builds the scene on a powered-up platform; returns the guest handle (0 if none).
uint32_t build(TestPlatform& p, Scene s)
{
    if (s == Scene::Uninit)
        return 0;
    REQUIRE(p.probe(kInitFlagEs) == 0);
    if (s == Scene::Init)
        return 0;
    uint32_t h = 0;
    REQUIRE(p.launch_start(policy::ES, h) == 0);
    REQUIRE(p.activate(h, 5) == 0);
    if (s == Scene::LUpdate)
        return h;
    REQUIRE(p.update_data(h, TestPlatform::kGuest, 4096) == 0);
    REQUIRE(p.measure(h) == 0);
    if (s == Scene::LSecret)
        return h;
    REQUIRE(p.finish(h) == 0);
    return h;
}

int platform_bit(Scene s) { return s == Scene::Uninit ? P_U : s == Scene::Init ? P_I : P_W; }
int guest_bit(Scene s) { return s == Scene::LUpdate ? G_LU : s == Scene::LSecret ? G_LS : s == Scene::Running ? G_RUN : 0; }

struct Snapshot {
    Bytes platform;
    Bytes guest;
    bool operator==(Snapshot const&) const = default;
};
Snapshot snapshot(TestPlatform& p, uint32_t h)
{
    auto ps = p.platform_status();
    auto gs = p.guest_status(h ? h : 1);
    Snapshot s;
    s.platform.assign(reinterpret_cast<uint8_t*>(&ps), reinterpret_cast<uint8_t*>(&ps) + sizeof ps);
    s.guest.assign(reinterpret_cast<uint8_t*>(&gs), reinterpret_cast<uint8_t*>(&gs) + sizeof gs);
    return s;
}

} // namespace

TEST_CASE("Command x state matrix (AMD-ASPFW sev_mcmd.c)", "[firmware][matrix]")
{
    TempDir dir("matrix");
    for (Scene scene : { Scene::Uninit, Scene::Init, Scene::LUpdate, Scene::LSecret, Scene::Running }) {
        for (Row const& row : kMatrix) {
            INFO(row.name << " in " << scene_name(scene));
            TestPlatform p(FirmwareParams::for_model(CpuModel::Milan), dir.path);
            uint32_t h = build(p, scene);
            Snapshot before = (scene == Scene::Uninit) ? Snapshot {} : snapshot(p, h);
            Bytes buf = buffer_for(row.id, h ? h : 1);
            p.poke(TestPlatform::kCmdBuf, buf);
            uint16_t status = p.issue(row.id, TestPlatform::kCmdBuf);
            bool platform_ok = row.platform & platform_bit(scene);
            // Guest commands need an existing guest; in UNINIT/INIT there is none.
            bool guest_ok = row.guest == 0 || (row.guest & guest_bit(scene));
            if (!platform_ok) {
                CHECK(status == st(Status::INVALID_PLATFORM_STATE));
            } else if (row.guest && guest_bit(scene) == 0) {
                // No guest in this platform state: the handle is invalid (GUEST_STATUS says state 0).
                CHECK((status == st(Status::INVALID_GUEST) || (row.id == 0x23 && status == 0)));
            } else if (!guest_ok) {
                CHECK(status == st(Status::INVALID_GUEST_STATE));
            } else {
                CHECK(status != st(Status::INVALID_PLATFORM_STATE));
                CHECK(status != st(Status::INVALID_GUEST_STATE));
            }
            if (status != 0 && scene != Scene::Uninit)
                CHECK(snapshot(p, h) == before);
            if (status != 0 && scene == Scene::Uninit)
                CHECK(p.platform_status().state == 0);
        }
    }
}

TEST_CASE("The permitted commands succeed in their states (matrix positive cases)", "[firmware][matrix]")
{
    TempDir dir("matrix-ok");
    struct Case {
        Scene scene;
        uint32_t id = 0;
    };
    // The commands whose valid buffer above is a complete, successful request in that scene.
    Case const ok[] = {
        { Scene::Uninit, 0x01 }, { Scene::Uninit, 0x02 }, { Scene::Uninit, 0x03 }, { Scene::Uninit, 0x04 },
        { Scene::Uninit, 0x0A }, { Scene::Uninit, 0x0C }, { Scene::Uninit, 0x0D }, { Scene::Uninit, 0x0E },
        { Scene::Init, 0x02 }, { Scene::Init, 0x05 }, { Scene::Init, 0x06 }, { Scene::Init, 0x08 }, { Scene::Init, 0x09 },
        { Scene::Init, 0x0A }, { Scene::Init, 0x0C }, { Scene::Init, 0x23 }, { Scene::Init, 0x30 },
        { Scene::LUpdate, 0x02 }, { Scene::LUpdate, 0x06 }, { Scene::LUpdate, 0x08 }, { Scene::LUpdate, 0x09 },
        { Scene::LUpdate, 0x22 }, { Scene::LUpdate, 0x23 }, { Scene::LUpdate, 0x24 }, { Scene::LUpdate, 0x30 },
        { Scene::LUpdate, 0x31 }, { Scene::LUpdate, 0x32 }, { Scene::LUpdate, 0x33 }, { Scene::LUpdate, 0x60 },
        { Scene::LUpdate, 0x61 }, { Scene::LSecret, 0x35 }, { Scene::LSecret, 0x36 }, { Scene::Running, 0x36 },
        { Scene::Running, 0x22 }, { Scene::Running, 0x23 },
    };
    for (auto const& c : ok) {
        INFO("command 0x" << std::hex << c.id << " in " << scene_name(c.scene));
        TestPlatform p(FirmwareParams::for_model(CpuModel::Milan), dir.path);
        uint32_t h = build(p, c.scene);
        Bytes buf = buffer_for(c.id, h ? h : 1);
        p.poke(TestPlatform::kCmdBuf, buf);
        CHECK(p.issue(c.id, TestPlatform::kCmdBuf) == 0);
    }
}
