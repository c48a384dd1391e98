// The README's measured-launch contract ("What a `-kernel` launch measures"), tried the way a
// guest owner who never saw sevemu's code would: the launch digest is built here from the
// README's rules alone — a Multiboot header scan, an ELF32 program-header reader, the memory map
// as a function of -m, the information structure, the GDT, the string and module layout, the
// page set — with nothing from emulator/, firmware/ or tools/sevemu-owner, only OpenSSL's
// SHA-256 and HMAC. It must equal what `sevemu-owner measurement digest` (the reference
// implementation, which shares its loader with sevemu) prints, and the LAUNCH_MEASURE HMAC built
// from the README's byte list must be accepted by `sevemu-owner measurement verify`.
#include "tests/emulator/synthetic_linux.h"
#include "tests/tools/owner_run.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <optional>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

using Bytes = std::vector<uint8_t>;
constexpr uint64_t kPage = 4096;

Bytes read_all(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in);
    return Bytes(std::istreambuf_iterator<char>(in), {});
}

uint32_t le32(Bytes const& f, uint64_t off)
{
    REQUIRE(off + 4 <= f.size());
    return uint32_t(f[off]) | uint32_t(f[off + 1]) << 8 | uint32_t(f[off + 2]) << 16 | uint32_t(f[off + 3]) << 24;
}
uint16_t le16(Bytes const& f, uint64_t off)
{
    REQUIRE(off + 2 <= f.size());
    return uint16_t(f[off] | f[off + 1] << 8);
}

// Guest-physical memory as the README describes it before loading: all zeros. Kept sparse so
// that -m 2G costs nothing.
class Memory {
public:
    void write(uint64_t addr, uint8_t const* p, size_t n)
    {
        for (size_t i = 0; i < n; ++i)
            page(addr + i)[(addr + i) % kPage] = p[i];
    }
    void write(uint64_t addr, Bytes const& b) { write(addr, b.data(), b.size()); }
    void zero(uint64_t addr, uint64_t n)
    {
        for (uint64_t i = 0; i < n; ++i)
            page(addr + i)[(addr + i) % kPage] = 0;
    }
    std::array<uint8_t, kPage> read_page(uint64_t gpa) const
    {
        auto it = m_pages.find(gpa / kPage);
        return it == m_pages.end() ? std::array<uint8_t, kPage> {} : it->second;
    }

private:
    std::array<uint8_t, kPage>& page(uint64_t addr) { return m_pages[addr / kPage]; } // new pages are zero
    std::map<uint64_t, std::array<uint8_t, kPage>> m_pages;
};

void put32(Bytes& b, size_t off, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        b[off + i] = uint8_t(v >> (8 * i));
}
void put64(Bytes& b, size_t off, uint64_t v)
{
    for (int i = 0; i < 8; ++i)
        b[off + i] = uint8_t(v >> (8 * i));
}
uint64_t align_up(uint64_t v) { return (v + kPage - 1) / kPage * kPage; }

struct Segment {
    uint32_t paddr;
    uint64_t offset;
    uint32_t filesz, memsz;
};

// README step 1: the Multiboot header, then either the a.out kludge fields or the ELF32
// program headers.
std::vector<Segment> kernel_segments(Bytes const& f)
{
    std::optional<uint32_t> hdr;
    for (uint32_t i = 0; i + 12 <= std::min<size_t>(f.size(), 8192); i += 4)
        if (le32(f, i) == 0x1BADB002 && uint32_t(le32(f, i) + le32(f, i + 4) + le32(f, i + 8)) == 0) {
            hdr = i;
            break;
        }
    REQUIRE(hdr);
    uint32_t flags = le32(f, *hdr + 4);
    std::vector<Segment> segs;
    if (flags & (1u << 16)) {
        uint32_t header_addr = le32(f, *hdr + 12), load_addr = le32(f, *hdr + 16), load_end = le32(f, *hdr + 20),
                 bss_end = le32(f, *hdr + 24);
        uint64_t text_offset = *hdr - (header_addr - load_addr);
        uint64_t load_size = load_end ? load_end - load_addr : f.size() - text_offset;
        uint64_t mem = bss_end ? bss_end - load_addr : load_size;
        segs.push_back({ load_addr, text_offset, uint32_t(load_size), uint32_t(mem) });
        return segs;
    }
    // ELF32: e_phoff at 28, e_phentsize at 42, e_phnum at 44; per entry p_type at 0, p_offset
    // at 4, p_paddr at 12, p_filesz at 16, p_memsz at 20 (System V gABI).
    REQUIRE(f.size() >= 52);
    REQUIRE(f[4] == 1); // ELFCLASS32
    uint32_t phoff = le32(f, 28);
    uint16_t phentsize = le16(f, 42), phnum = le16(f, 44);
    for (unsigned n = 0; n < phnum; ++n) {
        uint64_t ph = phoff + uint64_t(n) * phentsize;
        if (le32(f, ph) != 1 || le32(f, ph + 20) == 0) // PT_LOAD with p_memsz != 0
            continue;
        segs.push_back({ le32(f, ph + 12), le32(f, ph + 4), le32(f, ph + 16), le32(f, ph + 20) });
    }
    REQUIRE(!segs.empty());
    return segs;
}

struct E820 {
    uint64_t base, length;
    uint32_t type;
};

// README: the memory map as a function of -m (M bytes, at most 2 GiB for an SEV guest).
std::vector<E820> memory_map(uint64_t m)
{
    return {
        { 0, 0x9FC00, 1 },
        { 0x9FC00, 0x400, 2 },
        { 0xF0000, 0x10000, 2 },
        { 0x100000, m - 0x20000 - 0x100000, 1 },
        { m - 0x20000, 0x20000, 2 },
        { 0xFFFC0000, 0x40000, 2 },
        { 0xFD00000000ull, 0x300000000ull, 2 },
    };
}

struct Module {
    std::string item; // the -initrd item: "PATH[ ARGS]"
    std::string path;
};

struct Launch {
    uint64_t memory;
    std::string kernel; // as typed
    std::optional<std::string> append;
    std::vector<Module> modules;
    bool sev_es {};     // README "SEV-ES: the AP page and the VMSAs" (policy 0x5)
    unsigned smp { 1 }; // with SEV-ES: one VMSA per vCPU
};

// --- SEV-ES, from the README's table alone: the AP page (E1) and the VMSAs (E2).
constexpr uint64_t kEsApPage = 0xFE000;
constexpr uint8_t kEsApStub[] = { 0xfa, 0x2e, 0xa1, 0x00, 0x00, 0x2e, 0x0b, 0x06, 0x02, 0x00, 0x74, 0x05, 0x2e, 0xff,
    0x2e, 0x00, 0x00, 0x66, 0xb9, 0x30, 0x01, 0x01, 0xc0, 0x66, 0xb8, 0x06, 0x00, 0x00, 0x00, 0x66, 0x31, 0xd2, 0x0f,
    0x30, 0xf3, 0x0f, 0x01, 0xd9, 0xeb, 0xd9 };
constexpr uint32_t kMilanCpuid1Eax = 0x00A00F11; // the README: RDX of an AP, EPYC-Milan

struct EsSeg {
    uint16_t selector, attributes;
    uint32_t limit;
    uint64_t base;
};

void put_es_seg(Bytes& v, size_t off, EsSeg s)
{
    v[off] = uint8_t(s.selector), v[off + 1] = uint8_t(s.selector >> 8);
    v[off + 2] = uint8_t(s.attributes), v[off + 3] = uint8_t(s.attributes >> 8);
    for (int i = 0; i < 4; ++i)
        v[off + 4 + i] = uint8_t(s.limit >> (8 * i));
    for (int i = 0; i < 8; ++i)
        v[off + 8 + i] = uint8_t(s.base >> (8 * i));
}

// The fields every VMSA of the table has in common (LDTR, TR, EFER, DR7, DR6, RFLAGS, G_PAT, XCR0).
Bytes es_vmsa_common()
{
    Bytes v(4096, 0);
    auto put = [&](size_t off, uint64_t x) {
        for (int i = 0; i < 8; ++i)
            v[off + i] = uint8_t(x >> (8 * i));
    };
    put_es_seg(v, 0x070, { 0, 0x082, 0xFFFF, 0 });
    put_es_seg(v, 0x090, { 0, 0x083, 0xFFFF, 0 });
    put(0x0D0, 0x1000);
    put(0x160, 0x400);
    put(0x168, 0xFFFF0FF0);
    put(0x170, 2);
    put(0x268, 0x0007040600070406ull);
    put(0x3E8, 1);
    return v;
}

Bytes es_vmsa_ap()
{
    Bytes v = es_vmsa_common();
    EsSeg data { 0, 0x093, 0xFFFF, 0 };
    for (size_t off : { 0x000, 0x020, 0x030, 0x040, 0x050 })
        put_es_seg(v, off, data);
    put_es_seg(v, 0x010, { 0xFE00, 0x09B, 0xFFFF, 0xFE000 });
    put_es_seg(v, 0x060, { 0, 0, 0xFFFF, 0 });
    put_es_seg(v, 0x080, { 0, 0, 0xFFFF, 0 });
    put64(v, 0x158, 0x60000010);
    put64(v, 0x178, 0x10);
    put64(v, 0x310, kMilanCpuid1Eax);
    return v;
}

// The Multiboot BSP: the entry state of the README's table.
Bytes es_vmsa_multiboot_bsp(uint32_t entry)
{
    Bytes v = es_vmsa_common();
    EsSeg data { 0x10, 0xC93, 0xFFFFFFFF, 0 };
    for (size_t off : { 0x000, 0x020, 0x030, 0x040, 0x050 })
        put_es_seg(v, off, data);
    put_es_seg(v, 0x010, { 0x08, 0xC9B, 0xFFFFFFFF, 0 });
    put_es_seg(v, 0x060, { 0, 0, 39, 0x9600 });
    put64(v, 0x158, 0x11);
    put64(v, 0x178, entry);
    put64(v, 0x1D8, 0x7000);     // RSP
    put64(v, 0x1F8, 0x2BADB002); // RAX
    put64(v, 0x318, 0x9500);     // RBX
    put64(v, 0x308, entry);      // RCX
    return v;
}

// The kernel's entry point: the a.out kludge's entry_addr (+28), else the ELF32 e_entry.
uint32_t multiboot_entry(Bytes const& f)
{
    for (uint32_t i = 0; i + 32 <= std::min<size_t>(f.size(), 8192); i += 4)
        if (le32(f, i) == 0x1BADB002 && uint32_t(le32(f, i) + le32(f, i + 4) + le32(f, i + 8)) == 0)
            return (le32(f, i + 4) & (1u << 16)) ? le32(f, i + 28) : le32(f, 24);
    FAIL("no Multiboot header");
    return 0;
}

std::string to_hex(uint8_t const* p, size_t n)
{
    static char const* digits = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < n; ++i) {
        s.push_back(digits[p[i] >> 4]);
        s.push_back(digits[p[i] & 15]);
    }
    return s;
}

struct Measured {
    std::array<uint8_t, 32> digest;
    std::vector<std::pair<uint64_t, uint64_t>> ranges; // (gpa, size)
};

Measured contract_digest(Launch const& l)
{
    Bytes file = read_all(l.kernel);
    auto segs = kernel_segments(file);
    Memory mem;

    // 1. Kernel segments in order: file bytes, then zeros to p_memsz.
    uint64_t low = ~0ull, high = 0;
    for (auto const& s : segs) {
        REQUIRE(s.offset + s.filesz <= file.size());
        mem.write(s.paddr, file.data() + s.offset, s.filesz);
        mem.zero(uint64_t(s.paddr) + s.filesz, s.memsz - s.filesz);
        low = std::min<uint64_t>(low, s.paddr);
        high = std::max<uint64_t>(high, uint64_t(s.paddr) + s.memsz);
    }

    // 2. The buffer above the kernel, offsets relative to the lowest load address L.
    std::string cmdline = l.kernel + " " + l.append.value_or("");
    uint64_t mods_off = align_up(high - low);
    uint64_t strings_off = mods_off + 16 * l.modules.size();
    uint64_t strings_len = cmdline.size() + 1 + 7; // + "sevemu\0"
    for (auto const& m : l.modules)
        strings_len += m.item.size() + 1;
    uint64_t cursor = align_up(strings_off + strings_len); // the first module's offset
    Bytes area(cursor - mods_off, 0);
    uint64_t str = strings_off;
    auto add_string = [&](std::string const& s) {
        std::memcpy(area.data() + (str - mods_off), s.data(), s.size());
        uint32_t phys = uint32_t(low + str);
        str += s.size() + 1;
        return phys;
    };
    for (size_t n = 0; n < l.modules.size(); ++n) {
        Bytes data = read_all(l.modules[n].path);
        uint64_t start = low + cursor;
        mem.write(start, data);
        put32(area, 16 * n + 0, uint32_t(start));
        put32(area, 16 * n + 4, uint32_t(start + data.size()));
        put32(area, 16 * n + 8, add_string(l.modules[n].item));
        cursor = align_up(cursor + data.size());
    }
    uint32_t cmdline_phys = add_string(cmdline);
    uint32_t loader_phys = add_string("sevemu");
    mem.write(low + mods_off, area);
    uint64_t buffer_end = low + cursor;

    // 3. The memory map at 0x9000.
    auto map = memory_map(l.memory);
    Bytes mmap(24 * map.size(), 0);
    for (size_t n = 0; n < map.size(); ++n) {
        put32(mmap, 24 * n, 20);
        put64(mmap, 24 * n + 4, map[n].base);
        put64(mmap, 24 * n + 12, map[n].length);
        put32(mmap, 24 * n + 20, map[n].type);
    }
    mem.write(0x9000, mmap);

    // 4. The information structure at 0x9500.
    Bytes mbi(88, 0);
    put32(mbi, 0, 0x24F);
    put32(mbi, 4, 639);
    put32(mbi, 8, uint32_t((l.memory - 0x20000 - 0x100000) / 1024));
    put32(mbi, 12, 0x8000FFFF);
    put32(mbi, 16, cmdline_phys);
    put32(mbi, 20, uint32_t(l.modules.size()));
    put32(mbi, 24, uint32_t(low + mods_off));
    put32(mbi, 44, uint32_t(mmap.size()));
    put32(mbi, 48, 0x9000);
    put32(mbi, 64, loader_phys);
    mem.write(0x9500, mbi);

    // 5. The GDT at 0x9600.
    uint64_t const gdt[5] = { 0, 0x00CF9A000000FFFFull, 0x00CF92000000FFFFull, 0x00009E000000FFFFull,
        0x000092000000FFFFull };
    Bytes g(40);
    for (size_t n = 0; n < 5; ++n)
        put64(g, 8 * n, gdt[n]);
    mem.write(0x9600, g);

    // The page set: [0x9000, 0xA000) and [L rounded down, buffer end rounded up), ascending,
    // each page once (two ranges that touch or overlap are one).
    std::vector<std::pair<uint64_t, uint64_t>> r { { 0x9000, 0xA000 }, { low / kPage * kPage, align_up(buffer_end) } };
    std::sort(r.begin(), r.end());
    if (r[0].second >= r[1].first)
        r = { { r[0].first, std::max(r[0].second, r[1].second) } };
    if (l.sev_es) {
        // E1: the AP page, zeros and the stub at +0x10, one more range in ascending order.
        mem.zero(kEsApPage, kPage);
        mem.write(kEsApPage + 0x10, kEsApStub, sizeof kEsApStub);
        for (auto const& [from, to] : r)
            REQUIRE((to <= kEsApPage || from >= kEsApPage + kPage)); // the README: such a kernel is refused
        r.push_back({ kEsApPage, kEsApPage + kPage });
        std::sort(r.begin(), r.end());
    }

    Measured out;
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    REQUIRE(ctx);
    REQUIRE(EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1);
    for (auto const& [from, to] : r) {
        out.ranges.push_back({ from, to - from });
        for (uint64_t gpa = from; gpa < to; gpa += kPage) {
            auto page = mem.read_page(gpa);
            REQUIRE(EVP_DigestUpdate(ctx, page.data(), page.size()) == 1);
        }
    }
    // E2: the VMSAs after the pages, the BSP first.
    for (unsigned n = 0; l.sev_es && n < l.smp; ++n) {
        Bytes v = n == 0 ? es_vmsa_multiboot_bsp(multiboot_entry(file)) : es_vmsa_ap();
        REQUIRE(EVP_DigestUpdate(ctx, v.data(), v.size()) == 1);
    }
    unsigned len = 0;
    REQUIRE(EVP_DigestFinal_ex(ctx, out.digest.data(), &len) == 1);
    EVP_MD_CTX_free(ctx);
    REQUIRE(len == 32);
    return out;
}

sevemu::testing::OwnerRun run(std::string const& args) { return sevemu::testing::run_owner(args); }

std::string quote(std::string const& s) { return "'" + s + "'"; } // test paths and arguments hold no quote

std::string owner_args(Launch const& l)
{
    std::string a = "-m " + std::to_string(l.memory >> 20) + "M --kernel " + quote(l.kernel);
    if (l.sev_es)
        a += " --policy 0x5 --smp " + std::to_string(l.smp);
    if (l.append)
        a += " --append " + quote(*l.append);
    if (!l.modules.empty()) {
        std::string initrd;
        for (auto const& m : l.modules) {
            std::string item;
            for (char c : m.item)
                item += c == ',' ? std::string(",,") : std::string(1, c); // the README: ",," is a comma
            initrd += (initrd.empty() ? "" : ",") + item;
        }
        a += " --initrd " + quote(initrd);
    }
    return a;
}

std::string owner_digest(Launch const& l)
{
    auto r = run("measurement digest " + owner_args(l));
    INFO(r.out);
    REQUIRE(r.code == 0);
    REQUIRE(r.out.size() == 65);
    return r.out.substr(0, 64);
}

std::filesystem::path scratch_dir()
{
    auto dir = std::filesystem::temp_directory_path() / ("sevemu-contract-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    return dir;
}

std::string write_file(std::filesystem::path const& p, Bytes const& b)
{
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<char const*>(b.data()), std::streamsize(b.size()));
    return p.string();
}

// Kernels of our own, for what the bundled guests do not show: an ELF32 kernel whose lowest
// load address is not page aligned, with p_vaddr != p_paddr, a bss, a PT_NOTE to skip and a gap
// of never-written pages between its two PT_LOAD segments; and an a.out-kludge kernel that
// loads only part of its file. They are loaded and measured, never run.
Bytes synthetic_elf32(uint32_t base)
{
    Bytes f(0x600);
    for (size_t i = 0; i < f.size(); ++i)
        f[i] = uint8_t(i * 13 + 1);
    std::memcpy(f.data(), "\x7F" "ELF\x01\x01\x01", 7);
    std::memset(f.data() + 7, 0, 9);
    auto put16 = [&](size_t off, uint16_t v) { f[off] = uint8_t(v), f[off + 1] = uint8_t(v >> 8); };
    put16(16, 2);  // ET_EXEC
    put16(18, 3);  // EM_386
    put32(f, 20, 1);
    put32(f, 24, base + 12); // e_entry
    put32(f, 28, 52);        // e_phoff
    put32(f, 32, 0);
    put32(f, 36, 0);
    put16(40, 52);
    put16(42, 32);
    put16(44, 3);
    put16(46, 0), put16(48, 0), put16(50, 0);
    auto phdr = [&](int n, uint32_t type, uint32_t off, uint32_t paddr, uint32_t filesz, uint32_t memsz) {
        size_t at = 52 + 32 * n;
        put32(f, at, type);
        put32(f, at + 4, off);
        put32(f, at + 8, paddr + 0xC0000000u); // p_vaddr: not where it loads
        put32(f, at + 12, paddr);
        put32(f, at + 16, filesz);
        put32(f, at + 20, memsz);
        put32(f, at + 24, 7);
        put32(f, at + 28, 0x1000);
    };
    phdr(0, 1, 0x200, base, 0x300, 0x900);         // text + bss
    phdr(1, 4, 0x100, 0, 0x10, 0x10);               // PT_NOTE: not loaded
    phdr(2, 1, 0x500, base + 0x2900, 0x100, 0x180); // after a gap of never-written pages
    put32(f, 0x200, 0x1BADB002);                     // Multiboot header, flags 0x2
    put32(f, 0x204, 0x2);
    put32(f, 0x208, uint32_t(-(0x1BADB002 + 0x2)));
    return f;
}

Bytes synthetic_aout(uint32_t load_addr)
{
    Bytes f(0x400);
    for (size_t i = 0; i < f.size(); ++i)
        f[i] = uint8_t(i * 29 + 5);
    uint32_t flags = 0x10003;
    put32(f, 0x40, 0x1BADB002);
    put32(f, 0x44, flags);
    put32(f, 0x48, uint32_t(-(0x1BADB002 + flags)));
    put32(f, 0x4C, load_addr + 0x40); // header_addr: the file starts at load_addr
    put32(f, 0x50, load_addr);
    put32(f, 0x54, load_addr + 0x300);  // load_end_addr: the last 0x100 bytes are not loaded
    put32(f, 0x58, load_addr + 0x2000); // bss_end_addr
    put32(f, 0x5C, load_addr + 0x60);   // entry
    return f;
}

} // namespace

TEST_CASE("the README's launch contract gives sevemu-owner's digest for the bundled guests", "[owner][contract]")
{
    auto dir = scratch_dir();
    // Two modules of their own: one that ends mid-page (5000 bytes: the next starts on the
    // following page boundary) and the bundled boot module with arguments.
    Bytes m1(5000);
    for (size_t i = 0; i < m1.size(); ++i)
        m1[i] = uint8_t(i * 7 + 3);
    std::string mod1 = write_file(dir / "mod1.bin", m1);
    std::string mod2 = SEVEMU_BOOT_MODULE;

    std::vector<std::string> kernels { SEVEMU_GUEST_ELF32, SEVEMU_GUEST_BOOT, SEVEMU_GUEST_SEV,
        write_file(dir / "odd-elf32.elf", synthetic_elf32(0x100800)), write_file(dir / "odd-aout.bin", synthetic_aout(0x200400)),
        // Loaded right above the loader's page: the two page ranges touch and are measured as one.
        write_file(dir / "low-elf32.elf", synthetic_elf32(0xA800)) };
    std::vector<uint64_t> sizes { 8ull << 20, 128ull << 20, 2048ull << 20 };
    std::vector<std::optional<std::string>> appends { std::nullopt, std::string("console=ttyS0 x=1"), std::string("") };
    std::vector<std::vector<Module>> module_sets {
        {},
        { { mod2 + " arg1 arg2", mod2 } },
        { { mod1, mod1 }, { mod2 + " second", mod2 } },
    };

    std::map<std::string, std::string> seen; // digest -> the launch, to show that each input counts
    for (auto const& k : kernels)
        for (auto m : sizes)
            for (size_t a = 0; a < appends.size(); ++a)
                for (auto const& mods : module_sets) {
                    // -append "" and no -append are the same command line ("NAME "): one pass.
                    if (a == 2 && !mods.empty())
                        continue;
                    Launch l { m, k, appends[a], mods };
                    INFO(owner_args(l));
                    auto mine = contract_digest(l);
                    std::string hex = to_hex(mine.digest.data(), 32);
                    CHECK(hex == owner_digest(l));
                    if (a == 2)
                        CHECK(seen.count(hex)); // same as without -append
                    else
                        CHECK(seen.emplace(hex, owner_args(l)).second);
                }
    CHECK(seen.size() == kernels.size() * sizes.size() * 2 * module_sets.size());
    std::filesystem::remove_all(dir);
}

TEST_CASE("README contract, SEV-ES: the AP page and one VMSA per vCPU give sevemu-owner's digest", "[owner][contract]")
{
    // The bundled guests (the SEV-ES guest among them), 1 to 3 vCPUs, with and without a
    // command line: the README's pages plus its VMSA table, hashed with OpenSSL, equal
    // `sevemu-owner measurement digest --policy 0x5 --smp N`.
    std::map<std::string, std::string> seen;
    for (std::string k : { std::string(SEVEMU_GUEST_SEV_ES), std::string(SEVEMU_GUEST_SEV), std::string(SEVEMU_GUEST_ELF32) })
        for (unsigned smp : { 1u, 2u, 3u })
            for (auto append : { std::optional<std::string> {}, std::optional<std::string> { "x=1" } }) {
                Launch l { 128ull << 20, k, append, {}, true, smp };
                INFO(owner_args(l));
                std::string hex = to_hex(contract_digest(l).digest.data(), 32);
                CHECK(hex == owner_digest(l));
                CHECK(seen.emplace(hex, owner_args(l)).second); // each vCPU count is another launch
                // Without ES the same command line measures neither the AP page nor registers.
                Launch plain = l;
                plain.sev_es = false;
                CHECK(to_hex(contract_digest(plain).digest.data(), 32) != hex);
            }
    // The owner refuses what sevemu refuses: SEV-ES on a CPU model without it.
    auto naples = run("measurement digest --policy 0x5 --cpu EPYC --kernel " + quote(SEVEMU_GUEST_SEV_ES));
    CHECK(naples.code != 0);
    CHECK(naples.out.find("SEV-ES") != std::string::npos);
}

TEST_CASE("the README's measured page set is the one sevemu-owner reports", "[owner][contract]")
{
    auto dir = scratch_dir();
    std::string mod1 = write_file(dir / "mod1.bin", Bytes(9000, 0xA5));
    std::string odd = write_file(dir / "odd-elf32.elf", synthetic_elf32(0x100800));
    std::string low = write_file(dir / "low-elf32.elf", synthetic_elf32(0xA800));
    for (std::string k : { std::string(SEVEMU_GUEST_ELF32), std::string(SEVEMU_GUEST_BOOT), odd, low }) {
        Launch l { 64ull << 20, k, std::string("a b c"), { { mod1 + " x", mod1 } } };
        auto mine = contract_digest(l);
        auto r = run("measurement digest --json " + owner_args(l));
        REQUIRE(r.code == 0);
        // The JSON is flat enough to read without a parser: "gpa":N,"size":N pairs in order.
        std::vector<std::pair<uint64_t, uint64_t>> theirs;
        for (size_t at = r.out.find("\"gpa\""); at != std::string::npos; at = r.out.find("\"gpa\"", at + 1)) {
            uint64_t gpa = std::stoull(r.out.substr(r.out.find(':', at) + 1));
            size_t s = r.out.find("\"size\"", at);
            REQUIRE(s != std::string::npos);
            theirs.push_back({ gpa, std::stoull(r.out.substr(r.out.find(':', s) + 1)) });
        }
        CHECK(theirs == mine.ranges);
        CHECK(theirs.size() == (k == low ? 1u : 2u));
        CHECK(r.out.find(to_hex(mine.digest.data(), 32)) != std::string::npos);
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("module items with commas, arguments and empty files follow the README", "[owner][contract]")
{
    auto dir = scratch_dir();
    std::string comma = write_file(dir / "a,b.bin", Bytes(4096, 0x11)); // exactly one page
    std::string empty = write_file(dir / "empty.bin", {});
    std::string tail = write_file(dir / "tail.bin", Bytes(1, 0x22));
    Launch l { 32ull << 20, SEVEMU_GUEST_BOOT, std::string("x"),
        { { comma + " p,q", comma }, { empty, empty }, { tail + " last", tail } } };
    CHECK(to_hex(contract_digest(l).digest.data(), 32) == owner_digest(l));
    std::filesystem::remove_all(dir);
}

TEST_CASE("a kernel over the loader's structures at 0x9000-0x9627 is refused", "[owner][contract]")
{
    auto dir = scratch_dir();
    for (uint32_t base : { 0x9400u, 0x8800u }) { // inside; and below, its bss reaching in
        std::string k = write_file(dir / "over.elf", synthetic_elf32(base));
        auto r = run("measurement digest -m 64M --kernel " + quote(k));
        INFO(r.out);
        CHECK(r.code != 0);
        CHECK(r.out.find("overlaps the Multiboot information") != std::string::npos);
        CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
    }
    // Just above it (0x9628 onwards, here 0x9700) loads, in the same page.
    auto k = write_file(dir / "over.elf", synthetic_elf32(0x9700));
    Launch l { 64ull << 20, k, std::nullopt, {} };
    CHECK(to_hex(contract_digest(l).digest.data(), 32) == owner_digest(l));
    std::filesystem::remove_all(dir);
}

TEST_CASE("LAUNCH_MEASURE as the README spells it is what sevemu-owner verifies", "[owner][contract]")
{
    auto dir = scratch_dir();
    Launch l { 128ull << 20, SEVEMU_GUEST_SEV, std::nullopt, {} };
    auto ld = contract_digest(l).digest;

    uint8_t tik[16], mnonce[16];
    REQUIRE(RAND_bytes(tik, 16) == 1);
    REQUIRE(RAND_bytes(mnonce, 16) == 1);
    std::string tik_file = write_file(dir / "tik.bin", Bytes(tik, tik + 16));
    uint8_t const api_major = 1, api_minor = 51, build = 3;
    uint32_t const policy = 0x1;

    // HMAC-SHA256(TIK, 0x04 || major || minor || build || policy (LE32) || digest || MNONCE).
    Bytes msg { 0x04, api_major, api_minor, build, uint8_t(policy), uint8_t(policy >> 8), uint8_t(policy >> 16),
        uint8_t(policy >> 24) };
    msg.insert(msg.end(), ld.begin(), ld.end());
    msg.insert(msg.end(), mnonce, mnonce + 16);
    REQUIRE(msg.size() == 56);
    uint8_t mac[32];
    unsigned mac_len = 0;
    REQUIRE(HMAC(EVP_sha256(), tik, 16, msg.data(), msg.size(), mac, &mac_len));
    REQUIRE(mac_len == 32);
    uint8_t blob[48];
    std::memcpy(blob, mac, 32);
    std::memcpy(blob + 32, mnonce, 16);
    char b64[80];
    REQUIRE(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64), blob, 48) == 64);

    std::string common = "measurement verify --tik " + quote(tik_file) + " --measurement " + b64 + " --api-major 1 --api-minor 51 --build 3";
    auto ok = run(common + " --policy 1 " + owner_args(l));
    INFO(ok.out);
    CHECK(ok.code == 0);
    auto ok_digest = run(common + " --policy 1 --digest " + to_hex(ld.data(), 32));
    CHECK(ok_digest.code == 0);
    // Another policy, or another launch (-m), is another MAC.
    CHECK(run(common + " --policy 5 --digest " + to_hex(ld.data(), 32)).code != 0);
    CHECK(run(common + " --policy 1 -m 64M --kernel " + quote(l.kernel)).code != 0);
    std::filesystem::remove_all(dir);
}

// --- The Linux contract (README "Linux kernels: bzImage and vmlinux"), from the README alone.
namespace {

uint64_t le64(Bytes const& f, uint64_t off) { return le32(f, off) | uint64_t(le32(f, off + 4)) << 32; }

struct LinuxLaunch {
    uint64_t memory;
    std::string kernel, initrd, append;
    unsigned smp { 1 };
    std::string cpu {};  // --cpu (empty: the default, EPYC-Milan)
    unsigned c_bit { 51 }; // that model's C-bit (README "Inputs")
};

void put16(Bytes& b, size_t off, uint16_t v)
{
    b[off] = uint8_t(v);
    b[off + 1] = uint8_t(v >> 8);
}
void put_str(Bytes& b, size_t off, std::string const& s) { std::memcpy(b.data() + off, s.data(), s.size()); }

// L5: the ACPI tables in the 64 KiB region at A.
Bytes readme_acpi(uint64_t A, unsigned n)
{
    Bytes b(0x10000, 0);
    auto header = [&](size_t off, std::string const& sig, uint32_t len, uint8_t rev) {
        put_str(b, off, sig);
        put32(b, off + 4, len);
        b[off + 8] = rev;
        put_str(b, off + 10, "SEVEMU");
        put_str(b, off + 16, "SEVEMUPC");
        put32(b, off + 24, 1);
        put_str(b, off + 28, "SEVE");
        put32(b, off + 32, 1);
    };
    auto checksum = [&](size_t off, size_t len, size_t at) {
        uint8_t sum = 0;
        for (size_t i = 0; i < len; ++i)
            sum = uint8_t(sum + b[off + i]);
        b[at] = uint8_t(-sum);
    };
    auto gas = [&](size_t off, uint8_t width, uint8_t access, uint64_t addr) {
        b[off] = 1;
        b[off + 1] = width;
        b[off + 3] = access;
        put64(b, off + 4, addr);
    };
    // RSDP
    put_str(b, 0, "RSD PTR ");
    put_str(b, 9, "SEVEMU");
    b[15] = 2;
    put32(b, 20, 36);
    put64(b, 24, A + 0x40);
    checksum(0, 20, 8);
    checksum(0, 36, 32);
    // XSDT
    header(0x40, "XSDT", 52, 1);
    put64(b, 0x40 + 36, A + 0x100);
    put64(b, 0x40 + 44, A + 0x300);
    checksum(0x40, 52, 0x40 + 9);
    // FACS
    put_str(b, 0xC0, "FACS");
    put32(b, 0xC4, 64);
    b[0xC0 + 32] = 2;
    // FADT
    size_t f = 0x100;
    header(f, "FACP", 276, 6);
    put32(b, f + 36, uint32_t(A + 0xC0));
    put32(b, f + 40, uint32_t(A + 0x240));
    put16(b, f + 46, 9);
    put32(b, f + 56, 0x600);
    put32(b, f + 64, 0x604);
    put32(b, f + 76, 0x608);
    b[f + 88] = 4;
    b[f + 89] = 2;
    b[f + 91] = 4;
    put16(b, f + 96, 0x0FFF);
    put16(b, f + 98, 0x0FFF);
    put16(b, f + 109, 3);
    put32(b, f + 112, 0x465);
    gas(f + 116, 8, 1, 0xCF9);
    b[f + 128] = 6;
    put64(b, f + 132, A + 0xC0);
    put64(b, f + 140, A + 0x240);
    gas(f + 148, 32, 0, 0x600);
    gas(f + 172, 16, 0, 0x604);
    gas(f + 208, 32, 0, 0x608);
    checksum(f, 276, f + 9);
    // DSDT
    header(0x240, "DSDT", 49, 2);
    uint8_t const aml[] = { 0x08, 0x5C, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00 };
    std::memcpy(b.data() + 0x240 + 36, aml, sizeof aml);
    checksum(0x240, 49, 0x240 + 9);
    // MADT
    size_t m = 0x300;
    uint32_t len = 82 + 8 * n;
    header(m, "APIC", len, 1);
    put32(b, m + 36, 0xFEE00000);
    put32(b, m + 40, 1);
    size_t at = m + 44;
    for (unsigned i = 0; i < n; ++i, at += 8) {
        uint8_t e[8] = { 0, 8, uint8_t(i), uint8_t(i), 1, 0, 0, 0 };
        std::memcpy(b.data() + at, e, 8);
    }
    uint8_t io[4] = { 1, 12, 0, 0 };
    std::memcpy(b.data() + at, io, 4);
    put32(b, at + 4, 0xFEC00000);
    at += 12;
    uint8_t iso0[4] = { 2, 10, 0, 0 };
    std::memcpy(b.data() + at, iso0, 4);
    put32(b, at + 4, 2);
    at += 10;
    uint8_t iso9[4] = { 2, 10, 0, 9 };
    std::memcpy(b.data() + at, iso9, 4);
    put32(b, at + 4, 9);
    put16(b, at + 8, 0x000D);
    at += 10;
    uint8_t nmi[6] = { 4, 6, 0xFF, 0, 0, 1 };
    std::memcpy(b.data() + at, nmi, 6);
    checksum(m, len, m + 9);
    return b;
}

Measured readme_linux_digest(LinuxLaunch const& l)
{
    Bytes file = read_all(l.kernel);
    Bytes initrd = l.initrd.empty() ? Bytes {} : read_all(l.initrd);
    uint64_t A = l.memory - 0x10000;
    struct E { uint64_t base, len; uint32_t type; };
    std::vector<E> e820 { { 0, 0x9FC00, 1 }, { 0x9FC00, 0x60400, 2 }, { 0x100000, A - 0x100000, 1 }, { A, 0x10000, 3 } };
    Bytes low(0xA0000, 0);
    uint64_t const gdt[4] = { 0, 0, 0x00CF9B000000FFFFull, 0x00CF93000000FFFFull };
    for (size_t i = 0; i < 4; ++i)
        put64(low, 0x6000 + 8 * i, gdt[i]);
    put_str(low, 0x20000, l.append);
    Memory mem;
    uint64_t I = 0, kernel_from, kernel_to;
    bool bz = file.size() >= 0x206 && std::memcmp(file.data() + 0x202, "HdrS", 4) == 0;
    if (bz) {
        uint64_t h = 0x202 + file[0x201];
        uint64_t s = file[0x1F1] ? file[0x1F1] : 4;
        uint64_t pm = (s + 1) * 512, P = file.size() - pm;
        if (!initrd.empty())
            I = (std::min<uint64_t>(le32(file, 0x22C), A - 1) - initrd.size()) & ~uint64_t(0xFFF);
        size_t z = 0x7000;
        std::memcpy(low.data() + z + 0x1F1, file.data() + 0x1F1, h - 0x1F1);
        low[z + 0x210] = 0xFF;
        put32(low, z + 0x228, 0x20000);
        put32(low, z + 0x0C8, 0);
        put32(low, z + 0x218, uint32_t(I));
        put32(low, z + 0x21C, uint32_t(initrd.size()));
        put32(low, z + 0x0C0, 0);
        put32(low, z + 0x0C4, 0);
        put32(low, z + 0x23C, 0);
        put64(low, z + 0x250, 0);
        put64(low, z + 0x070, A);
        low[z + 0x1E8] = uint8_t(e820.size());
        for (size_t i = 0; i < e820.size(); ++i) {
            put64(low, z + 0x2D0 + 20 * i, e820[i].base);
            put64(low, z + 0x2D0 + 20 * i + 8, e820[i].len);
            put32(low, z + 0x2D0 + 20 * i + 16, e820[i].type);
        }
        mem.write(0x100000, file.data() + pm, P);
        kernel_from = 0x100000;
        kernel_to = align_up(0x100000 + P);
    } else {
        // ELF64: program headers at e_phoff (32), e_phentsize (54), e_phnum (56); p_type +0,
        // p_offset +8, p_paddr +24, p_filesz +32, p_memsz +40.
        uint64_t phoff = le64(file, 32);
        uint16_t phentsize = le16(file, 54), phnum = le16(file, 56);
        uint64_t KL = ~0ull, KH = 0;
        std::vector<std::array<uint64_t, 4>> segs;
        for (unsigned i = 0; i < phnum; ++i) {
            uint64_t ph = phoff + uint64_t(i) * phentsize;
            if (le32(file, ph) != 1 || le64(file, ph + 40) == 0)
                continue;
            segs.push_back({ le64(file, ph + 24), le64(file, ph + 8), le64(file, ph + 32), le64(file, ph + 40) });
            KL = std::min(KL, segs.back()[0]);
            KH = std::max(KH, segs.back()[0] + segs.back()[3]);
        }
        REQUIRE(!segs.empty());
        kernel_from = KL / kPage * kPage;
        kernel_to = align_up(KH);
        for (auto const& s : segs)
            mem.write(s[0], file.data() + s[1], s[2]);
        if (!initrd.empty())
            I = (std::min<uint64_t>(0xFFFFFFFF, A - 1) - initrd.size()) & ~uint64_t(0xFFF);
        // L2: the 64-bit code descriptor; L6 (vmlinux): the zero page and the identity map.
        put64(low, 0x6010, 0x00AF9B000000FFFFull);
        size_t z = 0x7000;
        put16(low, z + 0x1FE, 0xAA55);
        put_str(low, z + 0x202, "HdrS");
        put16(low, z + 0x206, 0x020F);
        low[z + 0x211] = 1;
        put32(low, z + 0x230, 0x1000000);
        put32(low, z + 0x238, 2047);
        low[z + 0x210] = 0xFF;
        put32(low, z + 0x228, 0x20000);
        put32(low, z + 0x218, uint32_t(I));
        put32(low, z + 0x21C, uint32_t(initrd.size()));
        put64(low, z + 0x070, A);
        low[z + 0x1E8] = uint8_t(e820.size());
        for (size_t i = 0; i < e820.size(); ++i) {
            put64(low, z + 0x2D0 + 20 * i, e820[i].base);
            put64(low, z + 0x2D0 + 20 * i + 8, e820[i].len);
            put32(low, z + 0x2D0 + 20 * i + 16, e820[i].type);
        }
        uint64_t c = 1ull << l.c_bit;
        put64(low, 0x9000, 0xA003 | c);
        for (uint64_t g = 0; g < 4; ++g)
            put64(low, 0xA000 + 8 * g, (0xB000 + 0x1000 * g) | 3 | c);
        for (uint64_t n = 0; n < 2048; ++n)
            put64(low, 0xB000 + 8 * n, n * 0x200000 | 0x83 | c);
    }
    mem.write(0, low);
    if (!initrd.empty())
        mem.write(I, initrd);
    mem.write(A, readme_acpi(A, l.smp));

    // L7: the ranges, ascending, touching ones merged.
    std::vector<std::pair<uint64_t, uint64_t>> r { { 0, 0xA0000 }, { kernel_from, kernel_to }, { A, A + 0x10000 } };
    if (!initrd.empty())
        r.push_back({ I, align_up(I + initrd.size()) });
    std::sort(r.begin(), r.end());
    std::vector<std::pair<uint64_t, uint64_t>> merged;
    for (auto const& x : r) {
        if (!merged.empty() && merged.back().second >= x.first)
            merged.back().second = std::max(merged.back().second, x.second);
        else
            merged.push_back(x);
    }
    Measured out;
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    REQUIRE(ctx);
    REQUIRE(EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1);
    for (auto const& [from, to] : merged) {
        out.ranges.push_back({ from, to - from });
        for (uint64_t gpa = from; gpa < to; gpa += kPage) {
            auto page = mem.read_page(gpa);
            REQUIRE(EVP_DigestUpdate(ctx, page.data(), page.size()) == 1);
        }
    }
    unsigned len = 0;
    REQUIRE(EVP_DigestFinal_ex(ctx, out.digest.data(), &len) == 1);
    EVP_MD_CTX_free(ctx);
    return out;
}

void check_linux_contract(LinuxLaunch const& l)
{
    auto want = readme_linux_digest(l);
    std::string args = "measurement digest -m " + std::to_string(l.memory >> 20) + "M --kernel " + quote(l.kernel)
        + " --append " + quote(l.append) + " --smp " + std::to_string(l.smp);
    if (!l.cpu.empty())
        args += " --cpu " + l.cpu;
    if (!l.initrd.empty())
        args += " --initrd " + quote(l.initrd);
    auto r = run(args);
    INFO(args << "\n" << r.out);
    REQUIRE(r.code == 0);
    CHECK(r.out == to_hex(want.digest.data(), 32) + "\n");
    auto j = run(args + " --json");
    for (auto const& [gpa, size] : want.ranges)
        CHECK(j.out.find("\"gpa\": " + std::to_string(gpa)) != std::string::npos);
}

std::string write_temp_file(std::string const& name, Bytes const& b)
{
    auto p = (std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid()))).string();
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<char const*>(b.data()), std::streamsize(b.size()));
    return p;
}

} // namespace

TEST_CASE("README contract: Linux bzImage and PVH digests from the README alone equal sevemu-owner's", "[contract][linux]")
{
    auto bz = write_temp_file("contract-bzImage", sevemu::test::synthetic_bzimage());
    auto pvh = write_temp_file("contract-vmlinux", sevemu::test::synthetic_pvh());
    Bytes rd(7777);
    for (size_t i = 0; i < rd.size(); ++i)
        rd[i] = uint8_t(i * 31 + 7);
    auto initrd = write_temp_file("contract-initrd", rd);
    check_linux_contract({ 64ull << 20, bz, initrd, "console=ttyS0 panic=-1", 1 });
    check_linux_contract({ 32ull << 20, bz, "", "", 1 });
    check_linux_contract({ 128ull << 20, bz, initrd, "console=ttyS0", 4 });
    check_linux_contract({ 64ull << 20, pvh, initrd, "console=ttyS0", 1 });
    check_linux_contract({ 2048ull << 20, pvh, "", "x", 2 });
    // The C-bit is in the vmlinux's measured page tables: EPYC-Rome's is 47.
    check_linux_contract({ 64ull << 20, pvh, initrd, "console=ttyS0", 1, "EPYC-Rome", 47 });
    for (auto const& p : { bz, pvh, initrd })
        std::remove(p.c_str());
}

TEST_CASE("README contract: Debian's bzImage and vmlinux digests from the README alone equal sevemu-owner's",
    "[contract][linux]")
{
    std::string dir = LINUX_ASSETS;
    if (!std::filesystem::exists(dir + "/bzImage") || !std::filesystem::exists(dir + "/vmlinux")
        || !std::filesystem::exists(dir + "/initramfs.cpio.gz")) {
        WARN("SKIPPED: Debian's kernel assets are absent in " << dir << " (run scripts/linux-assets.sh)");
        return;
    }
    check_linux_contract({ 256ull << 20, dir + "/bzImage", dir + "/initramfs.cpio.gz", "console=ttyS0", 1 });
    check_linux_contract({ 512ull << 20, dir + "/vmlinux", dir + "/initramfs.cpio.gz", "console=ttyS0", 2 });
}
