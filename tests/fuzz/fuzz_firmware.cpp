// Fuzz harness `firmware`: SEV firmware commands through the PSP mailbox, as a hostile host
// driver issues them (devices/psp_mailbox.h, firmware/firmware.h), on the fixed platform of
// fuzz_fixed.h rebuilt for every input (reproducible from the input alone).
//
// Input:
//   byte 0      the scene the commands start from (bits): 0 INIT + WBINVD + DF_FLUSH; 1 INIT
//               with SEV-ES (TMR at 8 MiB); 2 a guest (handle 1) in LUPDATE; 3 its ASID
//               activated, one page launched and measured (LSECRET); 4 LAUNCH_FINISH (RUNNING);
//               5 the guest's policy has NODBG
//   then up to 12 commands, each:
//     u8 command ID, u8 n, n bytes (n <= 64): the command buffer, placed at 0x1000;
//     u16 m, m bytes (m <= 8 KiB): data placed at 0x10000 (certificates, blobs, pages the
//     buffer may point at).
// Properties checked for every command:
//   - the mailbox completes and the status is one of the spec's codes (<= 0x27);
//   - a command that fails changes nothing: PLATFORM_STATUS, GUEST_STATUS of handles 0..4, every
//     ASID's state, the NV store, and DRAM (the command buffer's page, the data area, the
//     guests' pages, and 8 KiB at every address the buffer holds). The spec's exceptions are
//     allowed: the length written back with INVALID_LEN (length queries), DF_FLUSH's ASID
//     clean-up before WBINVD_REQUIRED, and INIT/INIT_EX erasing a damaged NV store with
//     SECURE_DATA_INVALID (the erased image, all 0xFF, and nothing else);
//   - after any command, guest_count equals the number of live handles.
#include "fuzz_check.h"
#include "fuzz_fixed.h"

#include <array>
#include <vector>

using namespace sevemu;
using namespace sevemu::fuzz;
using test::TestPlatform;

namespace {

constexpr uint64_t kScratch = 0x3000; // the harness's own status queries (never fuzzed data)
constexpr uint32_t kGuestAsid = 100;  // first SEV (non-ES) ASID on Milan

struct Region {
    uint64_t pa;
    Bytes bytes;
    bool operator==(Region const&) const = default;
};

struct State {
    Bytes platform;
    std::vector<Bytes> guests;
    std::vector<uint8_t> asids;
    Bytes nv;
    std::vector<Region> dram;
    bool operator==(State const&) const = default;
};

template <class T> Bytes as_bytes(T const& v)
{
    auto p = reinterpret_cast<uint8_t const*>(&v);
    return Bytes(p, p + sizeof v);
}

std::vector<uint64_t> regions_of(std::span<uint8_t const> buf)
{
    std::vector<uint64_t> r { TestPlatform::kCmdBuf, TestPlatform::kData, TestPlatform::kData + 0x2000,
        TestPlatform::kGuest, TestPlatform::kGuest + 0x2000 };
    // Every 4-byte-aligned 8-byte field may be an address (buffers put them at 8 and 4 mod 8).
    for (size_t off = 0; off + 8 <= buf.size(); off += 4) {
        uint64_t pa = load_le(buf.subspan(off), 8) & ~(1ull << 51); // the C-bit is masked
        if (pa < TestPlatform::kDramSize)
            r.push_back(pa & ~0xFFFull);
    }
    return r;
}

State capture(TestPlatform& p, std::vector<uint64_t> const& regions, fs::path const& dir)
{
    State s;
    PlatformStatusBuf ps {};
    FUZZ_CHECK(p.run(CommandId::PLATFORM_STATUS, ps, kScratch) == 0, "PLATFORM_STATUS failed");
    s.platform = as_bytes(ps);
    for (uint32_t h = 0; h <= 4; ++h) {
        GuestStatusBuf g {};
        g.handle = h;
        p.run(CommandId::GUEST_STATUS, g, kScratch);
        s.guests.push_back(as_bytes(g));
    }
    for (uint32_t a = 0; a <= p.fw->params().max_asid; ++a)
        s.asids.push_back(uint8_t(p.fw->asid_state(a)));
    auto nv = read_file(dir / "nv.bin");
    s.nv = nv ? *nv : Bytes {};
    for (uint64_t pa : regions) {
        uint64_t len = std::min<uint64_t>(0x2000, TestPlatform::kDramSize - pa);
        s.dram.push_back(Region { pa, p.peek(pa, len) });
    }
    return s;
}

void check_count(TestPlatform& p)
{
    uint32_t live = 0;
    for (uint32_t h = 1; h <= kMaxGuests; ++h)
        live += p.fw->guest_state(h).has_value();
    FUZZ_CHECK(live == p.fw->guest_count(), "guest_count %u, %u live handles", p.fw->guest_count(), live);
}

void scene(TestPlatform& p, uint8_t bits)
{
    if (!(bits & 1))
        return;
    bool es = bits & 2;
    FUZZ_CHECK(p.probe(es ? kInitFlagEs : 0) == 0, "INIT on the fixed platform failed");
    if (!(bits & 4))
        return;
    uint32_t policy = (bits & 0x20) ? policy::NODBG : 0;
    uint32_t h = 0;
    FUZZ_CHECK(p.launch_start(policy, h) == 0 && h == 1, "LAUNCH_START failed");
    if (!(bits & 8))
        return;
    std::array<uint8_t, 4096> page {};
    for (size_t i = 0; i < page.size(); ++i)
        page[i] = uint8_t(i * 7);
    p.poke(TestPlatform::kGuest, page.data(), page.size());
    FUZZ_CHECK(p.activate(h, kGuestAsid) == 0 && p.update_data(h, TestPlatform::kGuest, 4096) == 0
            && p.measure(h) == 0,
        "launch to LSECRET failed");
    if (bits & 0x10)
        FUZZ_CHECK(p.finish(h) == 0, "LAUNCH_FINISH failed");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size)
{
    static FuzzPlatform platform;
    Reader in(data, size);
    auto& p = platform.fresh();
    fs::path const& dir = p.dir();
    scene(p, in.u8());
    check_count(p);

    for (int n = 0; n < 12 && !in.empty(); ++n) {
        uint8_t cmd = in.u8();
        std::array<uint8_t, 64> buf {};
        auto b = in.take(in.u8() % 65);
        std::copy(b.begin(), b.end(), buf.begin());
        auto d = in.take(in.u16() % 0x2001);
        if (!d.empty())
            p.poke(TestPlatform::kData, d.data(), d.size());
        p.poke(TestPlatform::kCmdBuf, buf.data(), buf.size());

        auto regions = regions_of(buf);
        State before = capture(p, regions, dir);
        uint16_t status = p.issue(cmd, TestPlatform::kCmdBuf);
        FUZZ_CHECK(status <= 0x27, "status 0x%x is not a spec status", status);
        check_count(p);
        if (status == 0)
            continue;

        auto const* info = Firmware::find_command(cmd);
        // Length queries write the needed length back on INVALID_LEN (AMD-ASPFW CMD_BUF_INOUT_ON_ERR):
        // put the buffer back so the comparison sees only other writes.
        if (info && status == uint16_t(Status::INVALID_LEN) && info->mode == BufMode::InOutOnError)
            p.poke(TestPlatform::kCmdBuf, buf.data(), buf.size());
        State after = capture(p, regions, dir);
        if (cmd == uint8_t(CommandId::DF_FLUSH) && status == uint16_t(Status::WBINVD_REQUIRED))
            after.asids = before.asids; // the spec's one partial clean-up (firmware.h)
        if ((cmd == uint8_t(CommandId::INIT) || cmd == uint8_t(CommandId::INIT_EX))
            && status == uint16_t(Status::SECURE_DATA_INVALID)) {
            // AMD-ASPFW init_common erases a damaged store so that the driver's retry starts afresh.
            auto erased = nv_erased_image();
            FUZZ_CHECK(after.nv == before.nv || after.nv == erased, "the damaged SPI store was not erased");
            after.nv = before.nv;
            InitExBuf ex {};
            std::memcpy(&ex, buf.data(), sizeof ex);
            uint64_t nv = ex.nv_paddr & ~(1ull << 51);
            if (cmd == uint8_t(CommandId::INIT_EX) && nv != 0)
                for (size_t i = 0; i < before.dram.size(); ++i)
                    for (size_t k = 0; k < before.dram[i].bytes.size(); ++k) {
                        uint64_t pa = before.dram[i].pa + k;
                        if (pa >= nv && pa < nv + kNvSize) {
                            FUZZ_CHECK(after.dram[i].bytes[k] == 0xFF, "NV buffer not erased at 0x%llx",
                                (unsigned long long)pa);
                            after.dram[i].bytes[k] = before.dram[i].bytes[k];
                        }
                    }
        }
        FUZZ_CHECK(after.platform == before.platform, "command 0x%02x failed (0x%x) but changed PLATFORM_STATUS", cmd, status);
        FUZZ_CHECK(after.guests == before.guests, "command 0x%02x failed (0x%x) but changed a GUEST_STATUS", cmd, status);
        FUZZ_CHECK(after.asids == before.asids, "command 0x%02x failed (0x%x) but changed an ASID", cmd, status);
        FUZZ_CHECK(after.nv == before.nv, "command 0x%02x failed (0x%x) but changed the NV store", cmd, status);
        for (size_t i = 0; i < before.dram.size(); ++i)
            FUZZ_CHECK(after.dram[i] == before.dram[i], "command 0x%02x failed (0x%x) but wrote DRAM near 0x%llx", cmd,
                status, (unsigned long long)before.dram[i].pa);
    }
    return 0;
}
