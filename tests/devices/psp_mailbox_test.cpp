// The PSP mailbox at the register level, as Linux's ccp driver programs it (drivers/crypto/ccp/sp-pci.c,
// sev-dev.c __sev_do_cmd_locked).
#include "devices/psp_mailbox.h"
#include "tests/firmware/fw_harness.h"

#include <catch2/catch.hpp>

using namespace sevemu;
using namespace sevemu::devices;
using namespace sevemu::test;

TEST_CASE("Register layouts are Linux's sevv1/sevv2 + pspv1/2/4/6", "[devices][psp]")
{
    auto const& v1 = PspMailbox::registers(PspVersion::V1);
    CHECK(v1.cmdresp == 0x10580);
    CHECK(v1.cmdbuf_lo == 0x105E0);
    CHECK(v1.cmdbuf_hi == 0x105E4);
    CHECK(v1.feature == 0x105FC);
    CHECK(v1.inten == 0x10610);
    CHECK(v1.intsts == 0x10614);
    CHECK(v1.pci_device == 0x1456);
    auto const& v2 = PspMailbox::registers(PspVersion::V2);
    CHECK(v2.cmdresp == 0x10900 + 4 * 32);
    CHECK(v2.cmdbuf_lo == 0x10900 + 4 * 56);
    CHECK(v2.cmdbuf_hi == 0x10900 + 4 * 57);
    CHECK(v2.feature == 0x10900 + 4 * 63);
    CHECK(v2.inten == 0x10690);
    CHECK(v2.intsts == 0x10694);
    CHECK(PspMailbox::registers(PspVersion::V4).pci_device == 0x14CA);
    CHECK(PspMailbox::registers(PspVersion::V6).inten == 0x10510);
    CHECK(PspMailbox::registers(PspVersion::V6).intsts == 0x10514);
}

namespace {

struct Rig {
    TestPlatform p;
    uint64_t base = TestPlatform::kMmioBase;
    PspMailbox::Registers const& r = p.mbox->layout();
    uint32_t rd(uint32_t off) { return uint32_t(p.bus.read(base + off, 4).first); }
    void wr(uint32_t off, uint32_t v) { p.bus.write(base + off, 4, v); }
};

} // namespace

TEST_CASE("Each CPU model's AMD-SP presents its generation's PCI function (Linux sp-pci.c sp_pci_table)", "[devices][psp]")
{
    CHECK(psp_version_for(CpuModel::Naples) == PspVersion::V1); // 1022:1456
    CHECK(psp_version_for(CpuModel::Rome) == PspVersion::V2);   // 1022:1486
    CHECK(psp_version_for(CpuModel::Milan) == PspVersion::V2);  // 1022:1486
    CHECK(psp_version_for(CpuModel::Genoa) == PspVersion::V4);  // 1022:14CA
    for (CpuModel m : kAllCpuModels)
        CHECK(PspMailbox::registers(psp_version_for(m)).pci_device == cpu_model_info(m).psp_pci_device);
}

TEST_CASE("A command through the registers: status in CmdResp[15:0], bit 31 on completion", "[devices][psp]")
{
    Rig m;
    CHECK(m.rd(m.r.feature) & PspMailbox::kFeatureSev);
    CHECK(m.rd(m.r.cmdresp) == 0);
    // PLATFORM_STATUS into the scratch page, polled (IOC clear), as Linux's panic path does.
    m.wr(m.r.inten, 0);
    m.wr(m.r.cmdbuf_lo, uint32_t(TestPlatform::kCmdBuf));
    m.wr(m.r.cmdbuf_hi, 0);
    m.wr(m.r.cmdresp, 0x04u << 16);
    uint32_t resp = m.rd(m.r.cmdresp);
    CHECK(resp == 0x80000000u);
    CHECK(m.rd(m.r.intsts) == 0);
    CHECK(m.p.peek(TestPlatform::kCmdBuf, 2) == Bytes { 1, 51 });
    // The extended error stack (AMD-ASPFW) is left in CmdBuff_Addr: sevemu records none.
    CHECK(m.rd(m.r.cmdbuf_lo) == 0);
    CHECK(m.rd(m.r.cmdbuf_hi) == 0);
    // A failing command: INIT twice.
    m.p.poke(TestPlatform::kCmdBuf, Bytes(20, 0));
    m.wr(m.r.cmdbuf_lo, uint32_t(TestPlatform::kCmdBuf));
    m.wr(m.r.cmdresp, 0x01u << 16);
    CHECK(m.rd(m.r.cmdresp) == 0x80000000u);
    m.wr(m.r.cmdbuf_lo, uint32_t(TestPlatform::kCmdBuf));
    m.wr(m.r.cmdresp, 0x01u << 16);
    CHECK(m.rd(m.r.cmdresp) == (0x80000000u | 0x01));
    // Linux's 11-bit command field: 0x104 is no command.
    m.wr(m.r.cmdresp, 0x104u << 16);
    CHECK(m.rd(m.r.cmdresp) == (0x80000000u | 0x11));
}

TEST_CASE("IOC raises SEV_CMD_COMPLETE in INTSTS and the interrupt line; write 1 to clear", "[devices][psp]")
{
    Rig m;
    int rises = 0, falls = 0;
    m.p.irq.connect([&](bool level) { level ? ++rises : ++falls; });
    m.wr(m.r.inten, 0);
    m.wr(m.r.intsts, 0xFFFFFFFF); // probe: INTEN=0, INTSTS cleared
    m.wr(m.r.cmdbuf_lo, uint32_t(TestPlatform::kCmdBuf));
    m.wr(m.r.cmdresp, (0x04u << 16) | 1);
    CHECK(m.rd(m.r.intsts) == PspMailbox::kIntCmdComplete);
    CHECK(rises == 0); // masked
    m.wr(m.r.inten, 0xFFFFFFFF);
    CHECK(rises == 1);
    CHECK(m.p.irq.level());
    m.wr(m.r.intsts, m.rd(m.r.intsts)); // the IRQ handler's acknowledgement
    CHECK(m.rd(m.r.intsts) == 0);
    CHECK(falls == 1);
    CHECK_FALSE(m.p.irq.level());
    m.wr(m.r.cmdbuf_lo, uint32_t(TestPlatform::kCmdBuf));
    m.wr(m.r.cmdresp, (0x04u << 16) | 1);
    CHECK(rises == 2);
    CHECK(m.p.mbox->commands_run() == 2);
}

TEST_CASE("Other accesses: 64-bit buffer address write, narrow reads, unknown registers", "[devices][psp]")
{
    Rig m;
    m.p.bus.write(m.base + m.r.cmdbuf_lo, 8, TestPlatform::kCmdBuf | (0ull << 32));
    CHECK(m.rd(m.r.cmdbuf_lo) == TestPlatform::kCmdBuf);
    m.wr(m.r.cmdresp, 0x04u << 16);
    CHECK(m.p.bus.read(m.base + m.r.cmdresp + 3, 1).first == 0x80);
    CHECK(m.p.bus.read(m.base + m.r.cmdresp, 2).first == 0);
    CHECK(m.rd(0x10000) == 0);
    m.wr(0x10004, 0x1234); // ignored
    CHECK(m.rd(0x10004) == 0);
    // A buffer address beyond DRAM: the firmware refuses it, the mailbox completes normally.
    m.wr(m.r.cmdbuf_lo, 0);
    m.wr(m.r.cmdbuf_hi, 0x100);
    m.wr(m.r.cmdresp, 0x04u << 16);
    CHECK(m.rd(m.r.cmdresp) == (0x80000000u | 0x09));
}

TEST_CASE("The Naples (v1) layout drives the same firmware", "[devices][psp]")
{
    TestPlatform p(FirmwareParams::for_model(CpuModel::Naples));
    IrqLine irq;
    PspMailbox v1(*p.fw, PspVersion::V1, irq);
    Bus bus;
    REQUIRE(bus.add(0xF000'0000, PspMailbox::kMmioSize, v1));
    bus.write(0xF000'0000 + 0x105E0, 4, TestPlatform::kCmdBuf);
    bus.write(0xF000'0000 + 0x105E4, 4, 0);
    bus.write(0xF000'0000 + 0x10580, 4, 0x04u << 16);
    CHECK(bus.read(0xF000'0000 + 0x10580, 4).first == 0x80000000u);
    CHECK(p.peek(TestPlatform::kCmdBuf, 2) == Bytes { 0, 17 });
}
