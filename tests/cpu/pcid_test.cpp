// PCID (APM vol 2 §5.5.1, §3.1.3): CR4.PCIDE only in long mode with CR3[11:0] = 0, the PCID in
// CR3[11:0], CR3 bit 63 (no-invalidate) never stored.
#include "tests/cpu/harness.h"

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

TEST_CASE("paging: PCID — CR4.PCIDE in long mode, the PCID in CR3[11:0], bit 63 never stored", "[cpu][paging][pcid]")
{
    {
        Machine m;
        // mov rax, cr4; or eax, 1<<17; mov cr4, rax; mov rax, kPml4|5|1<<63; mov cr3, rax;
        // mov rbx, cr3; mov ecx, [kData]; hlt
        std::vector<uint8_t> code = { 0x0F, 0x20, 0xE0, 0x0D, 0x00, 0x00, 0x02, 0x00, 0x0F, 0x22, 0xE0, 0x48, 0xB8 };
        uint64_t v = kPml4 | 5 | (1ull << 63);
        for (int i = 0; i < 8; ++i) code.push_back(uint8_t(v >> (8 * i)));
        code.insert(code.end(), { 0x0F, 0x22, 0xD8, 0x0F, 0x20, 0xDB, 0x8B, 0x0C, 0x25, 0x00, 0x00, 0x02, 0x00, 0xF4 });
        m.start(Mode::Long64, code);
        m.put<uint32_t>(kData, 0xABCD);
        m.run();
        CHECK(m.halted_vector() == -1);
        auto s = m.cpu->state();
        CHECK(s.gpr[RBX] == (kPml4 | 5));
        CHECK((s.cr4 & cr4::PCIDE) != 0);
        CHECK(s.gpr[RCX] == 0xABCD); // translations keep working under PCID 5
    }
    {
        Machine m; // CR3[11:0] != 0 when PCIDE is set: #GP(0)
        m.start(Mode::Long64, { 0x48, 0xB8, 0x01, 0x10, 0, 0, 0, 0, 0, 0, 0x0F, 0x22, 0xD8, 0x0F, 0x20, 0xE0, 0x0D, 0x00,
                                  0x00, 0x02, 0x00, 0x0F, 0x22, 0xE0, 0xF4 });
        m.run();
        CHECK(m.halted_vector() == 13);
    }
    {
        Machine m; // outside long mode: #GP(0)
        m.start(Mode::Prot32, { 0x0F, 0x20, 0xE0, 0x0D, 0x00, 0x00, 0x02, 0x00, 0x0F, 0x22, 0xE0, 0xF4 });
        m.run();
        CHECK(m.halted_vector() == 13);
    }
}
