// Shared by the Linux loader tests: reads guest memory back and parses the ACPI tables, zero
// page and hvm_start_info with code independent of the code under test (offsets from the ACPI
// 6.4 spec, Linux uapi/asm/bootparam.h and Xen start_info.h, written out again here), and runs
// `iasl -d` (Debian acpica-tools) on the tables when it is installed.
#pragma once

#include "mmu/memory_controller.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace sevemu::test {

inline std::unique_ptr<mmu::MemoryController> make_memory(uint64_t size, uint64_t low_mem_top = 0xC000'0000)
{
    mmu::MemoryConfig cfg;
    cfg.dram_size = size;
    cfg.low_mem_top = low_mem_top;
    cfg.cache_pages = 64;
    return std::move(*mmu::MemoryController::create(cfg));
}

inline std::vector<uint8_t> read_mem(mmu::MemoryController& mc, uint64_t addr, size_t n)
{
    std::vector<uint8_t> b(n);
    REQUIRE(mc.read(Spa(addr), b, mmu::KeyId::none()).has_value());
    return b;
}
inline uint64_t rd(std::vector<uint8_t> const& b, size_t off, unsigned size)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i)
        v |= uint64_t(b.at(off + i)) << (8 * i);
    return v;
}
inline uint64_t rd(mmu::MemoryController& mc, uint64_t addr, unsigned size) { return rd(read_mem(mc, addr, size), 0, size); }
inline std::string rd_str(mmu::MemoryController& mc, uint64_t addr)
{
    std::string s;
    for (;;) {
        uint8_t c = uint8_t(rd(mc, addr++, 1));
        if (!c)
            return s;
        s.push_back(char(c));
    }
}
inline bool sums_to_zero(std::vector<uint8_t> const& b, size_t n)
{
    unsigned sum = 0;
    for (size_t i = 0; i < n; ++i)
        sum += b.at(i);
    return (sum & 0xFF) == 0;
}

struct ParsedAcpi {
    uint64_t rsdp {};
    std::map<std::string, uint64_t> tables; // signature → address (FACP, APIC from the XSDT; DSDT, FACS from the FADT)
    std::map<std::string, std::vector<uint8_t>> bytes;
};

// Walks RSDP → XSDT → tables, checking every signature, length and checksum on the way.
inline ParsedAcpi parse_acpi(mmu::MemoryController& mc, uint64_t rsdp)
{
    ParsedAcpi p;
    p.rsdp = rsdp;
    auto r = read_mem(mc, rsdp, 36);
    REQUIRE(std::string(r.begin(), r.begin() + 8) == "RSD PTR ");
    REQUIRE(sums_to_zero(r, 20));       // ACPI 6.4 §5.2.5.3: checksum of the first 20 bytes
    REQUIRE(sums_to_zero(r, 36));       // extended checksum of the whole structure
    REQUIRE(r[15] == 2);                // revision 2
    REQUIRE(rd(r, 20, 4) == 36);        // length
    uint64_t xsdt = rd(r, 24, 8);
    p.bytes["RSDP"] = r;
    auto table = [&](uint64_t addr, std::string const& sig) {
        auto h = read_mem(mc, addr, 36);
        REQUIRE(std::string(h.begin(), h.begin() + 4) == sig);
        uint32_t len = uint32_t(rd(h, 4, 4));
        REQUIRE(len >= 36);
        REQUIRE(len < 0x10000);
        auto t = read_mem(mc, addr, len);
        INFO(sig);
        REQUIRE(sums_to_zero(t, len));
        p.tables[sig] = addr;
        p.bytes[sig] = t;
        return t;
    };
    auto x = table(xsdt, "XSDT");
    for (size_t off = 36; off + 8 <= x.size(); off += 8) {
        uint64_t a = rd(x, off, 8);
        auto h = read_mem(mc, a, 4);
        table(a, std::string(h.begin(), h.end()));
    }
    REQUIRE(p.tables.count("FACP"));
    auto const& f = p.bytes["FACP"];
    uint64_t dsdt = rd(f, 140, 8), facs = rd(f, 132, 8);
    REQUIRE(rd(f, 40, 4) == dsdt);
    REQUIRE(rd(f, 36, 4) == facs);
    table(dsdt, "DSDT");
    auto fa = read_mem(mc, facs, 64);
    REQUIRE(std::string(fa.begin(), fa.begin() + 4) == "FACS");
    REQUIRE(rd(fa, 4, 4) == 64);
    REQUIRE(facs % 64 == 0);
    p.tables["FACS"] = facs;
    p.bytes["FACS"] = fa;
    return p;
}

// Checks the FADT, DSDT and MADT fields the Linux machine relies on.
inline void check_acpi_fields(ParsedAcpi const& p, unsigned cpus, bool ioapic)
{
    auto const& f = p.bytes.at("FACP");
    CHECK(f[8] == 6);                    // FADT revision 6
    CHECK(rd(f, 4, 4) == 276);
    CHECK(rd(f, 46, 2) == 9);            // SCI_INT
    CHECK(rd(f, 48, 4) == 0);            // SMI_CMD
    CHECK(rd(f, 56, 4) == 0x600);        // PM1a_EVT_BLK
    CHECK(rd(f, 64, 4) == 0x604);        // PM1a_CNT_BLK
    CHECK(rd(f, 76, 4) == 0x608);        // PM_TMR_BLK
    CHECK(f[88] == 4);
    CHECK(f[89] == 2);
    CHECK(f[91] == 4);
    CHECK(rd(f, 109, 2) == 3);           // IAPC_BOOT_ARCH: legacy devices, 8042
    CHECK((rd(f, 112, 4) & (1u << 10))); // RESET_REG_SUP
    CHECK(!(rd(f, 112, 4) & (1u << 20))); // not HW_REDUCED_ACPI
    CHECK(f[116] == 1);                  // reset register: system I/O
    CHECK(f[117] == 8);
    CHECK(rd(f, 120, 8) == 0xCF9);
    CHECK(f[128] == 6);
    // X_PM1a_EVT, X_PM1a_CNT, X_PM_TMR: I/O, widths 32/16/32, same ports.
    CHECK((f[148] == 1 && f[149] == 32 && rd(f, 152, 8) == 0x600));
    CHECK((f[172] == 1 && f[173] == 16 && rd(f, 176, 8) == 0x604));
    CHECK((f[208] == 1 && f[209] == 32 && rd(f, 212, 8) == 0x608));

    // DSDT AML: Name(\_S5, Package(){0, 0, 0, 0}), bytes from ACPI 6.4 §20.2 by hand.
    auto const& d = p.bytes.at("DSDT");
    std::vector<uint8_t> aml(d.begin() + 36, d.end());
    CHECK(aml == std::vector<uint8_t> { 0x08, 0x5C, '_', 'S', '5', '_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00 });

    auto const& m = p.bytes.at("APIC");
    CHECK(rd(m, 36, 4) == 0xFEE00000);
    CHECK(rd(m, 40, 4) == 1);
    unsigned lapics = 0, ioapics = 0, nmis = 0;
    std::map<unsigned, std::pair<unsigned, unsigned>> isos; // irq → (gsi, flags)
    for (size_t at = 44; at < m.size();) {
        uint8_t type = m[at], len = m[at + 1];
        REQUIRE(len >= 2);
        REQUIRE(at + len <= m.size());
        if (type == 0) {
            CHECK(len == 8);
            CHECK(m[at + 2] == lapics); // UID
            CHECK(m[at + 3] == lapics); // APIC ID
            CHECK(rd(m, at + 4, 4) == 1);
            ++lapics;
        } else if (type == 1) {
            CHECK(len == 12);
            CHECK(rd(m, at + 4, 4) == 0xFEC00000);
            CHECK(rd(m, at + 8, 4) == 0);
            ++ioapics;
        } else if (type == 2) {
            CHECK(len == 10);
            CHECK(m[at + 2] == 0);
            isos[m[at + 3]] = { unsigned(rd(m, at + 4, 4)), unsigned(rd(m, at + 8, 2)) };
        } else if (type == 4) {
            CHECK(len == 6);
            CHECK(m[at + 2] == 0xFF);
            CHECK(m[at + 5] == 1);
            ++nmis;
        } else {
            FAIL("unexpected MADT entry type " << int(type));
        }
        at += len;
    }
    CHECK(lapics == cpus);
    CHECK(nmis == 1);
    CHECK(ioapics == (ioapic ? 1u : 0u));
    if (ioapic) {
        CHECK(isos.size() == 2);
        CHECK(isos[0] == std::pair<unsigned, unsigned> { 2, 0 });
        CHECK(isos[9] == std::pair<unsigned, unsigned> { 9, 0xD });
    } else {
        CHECK(isos.empty());
    }
}

inline bool have_iasl() { return std::system("iasl -v >/dev/null 2>&1") == 0; }

// Writes each table to a file and disassembles it with iasl; returns signature → .dsl text.
inline std::map<std::string, std::string> iasl_disassemble(ParsedAcpi const& p)
{
    std::map<std::string, std::string> out;
    char tmpl[] = "/tmp/sevemu-iasl-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    std::string dir = tmpl;
    for (std::string sig : { "FACP", "APIC", "DSDT", "FACS" }) {
        auto const& b = p.bytes.at(sig);
        std::string bin = dir + "/" + sig + ".dat";
        std::ofstream(bin, std::ios::binary).write(reinterpret_cast<char const*>(b.data()), std::streamsize(b.size()));
        std::string cmd = "cd " + dir + " && iasl -d " + sig + ".dat >/dev/null 2>&1";
        INFO(cmd);
        REQUIRE(std::system(cmd.c_str()) == 0);
        std::ifstream in(dir + "/" + sig + ".dsl");
        std::stringstream ss;
        ss << in.rdbuf();
        out[sig] = ss.str();
    }
    std::system(("rm -rf " + dir).c_str());
    return out;
}

// Loads FADT, DSDT and MADT into ACPICA's own interpreter (acpiexec, the ACPICA that Linux
// carries in drivers/acpi/acpica) and evaluates \_S5; returns everything it printed.
inline std::string acpiexec_s5(ParsedAcpi const& p)
{
    char tmpl[] = "/tmp/sevemu-acpiexec-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    std::string dir = tmpl;
    for (std::string sig : { "FACP", "DSDT", "APIC" }) {
        auto const& b = p.bytes.at(sig);
        std::ofstream(dir + "/" + sig + ".dat", std::ios::binary)
            .write(reinterpret_cast<char const*>(b.data()), std::streamsize(b.size()));
    }
    std::string cmd = "cd " + dir + " && acpiexec -b 'Evaluate \\_S5' FACP.dat DSDT.dat APIC.dat > out.txt 2>&1";
    INFO(cmd);
    REQUIRE(std::system(cmd.c_str()) == 0);
    std::ifstream in(dir + "/out.txt");
    std::stringstream ss;
    ss << in.rdbuf();
    std::system(("rm -rf " + dir).c_str());
    return ss.str();
}

} // namespace sevemu::test
