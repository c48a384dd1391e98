// sevemu — the interpreter's internals, shared by the handler files. Not part of the public
// interface (cpu/cpu.h is). Everything here is on the hot path: keep it terse.
#pragma once

#include "cpu/cpu.h"
#include "cpu/svm/svm.h"
#include "mmu/memory_controller.h"
#include "mmu/paging.h"
#include "mmu/tlb.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#define SEVEMU_LIKELY(x) __builtin_expect(!!(x), 1)
#define SEVEMU_UNLIKELY(x) __builtin_expect(!!(x), 0)

namespace sevemu::cpu {

struct Core;
struct Insn;
using Handler = void (*)(Core&, Insn const&);

// Register file slots: 16 GPRs, a constant zero (absent base/index) and the next RIP
// (RIP-relative addressing and branch targets).
enum : uint8_t { kRegZero = 16, kRegNext = 17, kNumRegs = 18 };

// Prefix bits kept in Insn::pfx.
enum : uint8_t { kPfxRep = 1, kPfxRepne = 2, kPfxLock = 4, kPfxOpsize = 8, kPfxRex = 16, kPfxRexW = 32, kPfxEnd = 64 };

// One predecoded instruction. reg/rm are byte offsets into Core::r (8-bit high registers
// already resolved), base/index are register indices.
struct Insn {
    Handler fn;
    uint64_t imm;
    int32_t disp;
    uint16_t op;      // opcode-table index, for disassembly
    uint8_t len;
    uint8_t reg;
    uint8_t rm;
    uint8_t base;
    uint8_t index;
    uint8_t scale;
    uint8_t seg;
    uint8_t asize;    // 0 = 16, 1 = 32, 2 = 64-bit addressing
    uint8_t osize;    // operand size in bytes
    uint8_t pfx;
    uint8_t modrm;    // raw ModRM byte (group selectors, mod==3 test)
    uint8_t vreg;     // VEX.vvvv register byte offset
    uint8_t mem;      // 1 if the r/m operand is memory
    uint8_t imm2;     // ENTER nesting level
};

struct Block;

// A block's remembered successor (block chaining): the block that ran after it at linear
// address `lin` under `tag` (a JumpEntry's tag: mode, TLB bank, flush epoch). Valid exactly as
// a jump-cache entry is: any TLB flush or freed block moves the flush epoch on.
// The link also carries the block's instructions (first, count), so that run() reaches them
// without touching the Block itself (perf: the load of the Block's fields was the second cache
// miss at every block boundary, after the instruction array's).
struct BlockLink {
    uint64_t lin { ~0ull };
    uint32_t tag {};
    uint32_t count {};
    Block* block {};
    Insn const* first {};
};

struct Block {
    uint64_t lin {};   // linear address of the first instruction
    std::vector<Insn> insns;
    // Two successors (a branch's taken and fall-through exits), looked up before the jump
    // cache: they sit in the block just run, which is in the data cache, while the jump
    // cache's entry often is not (perf: the jump cache's load was ~7 % of run()).
    BlockLink link[2];
    uint8_t next_link {}; // the link the next new successor replaces
    uint8_t mode {};   // 0/1/2: 16/32/64-bit default sizes
    bool cached {};    // false for the scratch block (MMIO code, an instruction running onto MMIO)
    uint64_t spa {};   // its system-physical address
    mmu::KeyId key { mmu::KeyId::none() }; // the key its bytes were read under
    // A block of one instruction that runs onto the next linear page: the frame (page-aligned)
    // and key that page was fetched from; kNoSpa2 for every other block. It is found again
    // only while that page still fetches from there (Core::second_page_ok).
    static constexpr uint64_t kNoSpa2 = ~0ull;
    uint64_t spa2 { kNoSpa2 };
    mmu::KeyId key2 { mmu::KeyId::none() };
};

// A guest exception in flight (internal to the interpreter; run() catches it).
struct GuestFault {
    uint8_t vector;
    bool has_error;
    uint32_t error;
};

// An intercept fired in guest mode (thrown from a handler before it changes anything, like a
// GuestFault): run() catches it and performs the #VMEXIT (exec_svm.cpp).
struct SvmExit {
    svm::ExitInfo info;
};

enum : uint8_t { DE = 0, DB = 1, NMI = 2, BP = 3, OF_ = 4, BR = 5, UD = 6, NM = 7, DF_ = 8, TS = 10,
                 NP = 11, SS_ = 12, GP = 13, PF_ = 14, MF = 16, AC_ = 17, MC = 18, XF = 19 };

// LF_CFOF: CF = lf_cf bit 0, OF = lf_cf bit 1, ZF/SF/PF from the result, AF = 0 (shifts, multiply).
enum LfKind : uint8_t { LF_NONE, LF_ADD, LF_SUB, LF_LOGIC, LF_INC, LF_DEC, LF_CFOF };

template <int S> struct UT;
template <> struct UT<1> { using T = uint8_t; using ST = int8_t; };
template <> struct UT<2> { using T = uint16_t; using ST = int16_t; };
template <> struct UT<4> { using T = uint32_t; using ST = int32_t; };
template <> struct UT<8> { using T = uint64_t; using ST = int64_t; };
template <int S> using U = typename UT<S>::T;
template <int S> using SI = typename UT<S>::ST;

inline constexpr uint64_t kAsizeMask[3] = { 0xFFFF, 0xFFFFFFFF, ~0ull };

// 4096 entries per privilege bank: a Linux boot's working set (the bzImage decompressor's
// dictionary reads, page-table set-up) thrashed 512.
using CoreTlb = mmu::Tlb<4096>;

// 32 bytes, a two-way set to a cache line. Like a BlockLink, it carries the block's
// instructions (first, count: at most 256), so that a hit does not load the Block (perf: that
// load missed the cache as often as the entry's own).
struct alignas(32) JumpEntry {
    uint64_t lin { ~0ull };
    uint32_t tag {};        // decode mode | TLB bank << 2 | flush epoch << 8
    uint16_t code_epoch {}; // Core::code_epoch when made: the block is alive while it matches
    uint16_t count {};
    Block* block {};
    Insn const* first {};
};
static_assert(sizeof(JumpEntry) == 32);

struct Core {
    Core(mmu::MemoryController& mc, CpuModel model, IoHandler& io);

    // ---- Registers (hot)
    uint64_t r[kNumRegs] {};
    uint64_t rip {};
    uint64_t flags { 2 };      // RFLAGS; arithmetic bits valid only when lf_kind == LF_NONE
    uint64_t lf_a {}, lf_b {}, lf_res {};
    uint8_t lf_kind { LF_NONE }, lf_size { 1 }, lf_cf {};
    // Threaded dispatch (ops.h chain<H>): each handler's wrapper calls the next instruction's
    // handler itself until t_end, a block end (brk) or a throw; t_cur is the instruction
    // running now (one past the last retired once the chain returns), so run() counts the
    // instructions retired, faulting or not, as t_cur - block_first.
    Insn const* t_cur {};
    Insn const* t_end {};
    uint64_t rip_mask {};      // the RIP width of the block being run

    uint8_t mode {};           // decode mode 0/1/2
    bool mode64 {};
    bool brk {};               // end the current block after this instruction
    uint8_t bank {};           // TLB bank: 1 when CPL == 3
    uint8_t cpl {};
    uint64_t seg_base[6] {};   // effective base (0 for ES/CS/SS/DS in 64-bit mode)
    uint64_t seg_lo[6] {}, seg_hi[6] {};
    uint8_t seg_acc[6] {};     // 1 readable, 2 writable; 0 unusable

    // The running context's TLB (heap-held, so that a world switch parks it by moving a pointer).
    std::unique_ptr<CoreTlb> tlb { std::make_unique<CoreTlb>() };

    // ---- Architectural state (cold)
    Segment seg[6] {};
    Segment ldtr {}, tr {};
    DescriptorTable gdtr {}, idtr {};
    uint64_t cr0 {}, cr2 {}, cr3 {}, cr4 {}, cr8 {}, efer {}, xcr0 { 1 };
    uint64_t dr[4] {}, dr6 { 0xFFFF0FF0 }, dr7 { 0x400 };
    alignas(16) uint64_t xmm[16][2] {};
    // x87 (exec_x87.cpp): physical registers as host 80-bit long double, TOP in fsw[13:11].
    long double fpr[8] {};
    uint16_t fcw { 0x37F }, fsw {};
    uint8_t ftag_empty { 0xFF }; // bit i: physical register i is empty
    uint32_t mxcsr { 0x1F80 };
    MsrState msr {};
    int64_t tsc_offset {};
    uint64_t icount {};        // retired instructions (TSC source), as of the current block's start
    Insn const* block_first {}; // the current block's first instruction (see IcountNow)
    bool halted {};
    bool irq_shadow {};
    // SEV_ES_GHCB (C001_0130): the guest's GHCB MSR, exchanged with VMCB 0x0A0 by an SEV-ES
    // VMRUN/#VMEXIT (APM vol 2 §15.35.7); kept beside the MSR bank, not in CpuState.
    uint64_t ghcb_msr {};
    // The NMI pin (APM vol 2 §8.2.3): an NMI latched by Cpu::inject_nmi(), and the blocking
    // its delivery sets until the next IRET (§8.9.5 / SDM vol 3 §6.7.1).
    bool nmi_pending {}, nmi_blocked {};
    std::atomic<bool> stop_requested {};
    bool pending_shutdown {};

    // ---- SVM (exec_svm.cpp; APM vol 2 §15)
    std::optional<svm::GuestMode> guest; // set between VMRUN and #VMEXIT
    bool gif { true };                   // global interrupt flag (§15.17)
    bool host_vmrun {};                  // inside Cpu::host_vmrun(): run() returns at #VMEXIT
    bool vmexit_done {};                 // a #VMEXIT happened while host_vmrun
    std::optional<svm::Event> delivering; // the event being delivered (for EXITINTINFO)
    std::unique_ptr<mmu::TableResolver> guest_tables; // guest page walks under nested paging
    // The TLB is tagged by ASID (APM vol 2 §15.16): `tlb` holds the running context's entries,
    // the other contexts' are parked here until their ASID runs again. keep_tlb: a world switch
    // is reloading the registers, which must not flush.
    std::unordered_map<uint32_t, std::unique_ptr<CoreTlb>> parked_tlbs;
    bool keep_tlb {};
    void switch_tlb(uint32_t asid);
    template <class F> void for_each_tlb(F f)
    {
        f(*tlb);
        for (auto& [asid, t] : parked_tlbs)
            f(*t);
    }

    bool intercepted(svm::Intercept i) const { return guest && guest->intercepts(i); }
    // Raise #VMEXIT(code) for an intercepted instruction: nRIP = the next instruction.
    [[noreturn]] void intercept(svm::Intercept i, uint64_t info1 = 0, uint64_t info2 = 0);
    [[noreturn]] void vmexit_now(uint64_t code, uint64_t info1, uint64_t info2, uint64_t nrip);
    // The same #VMEXIT (or, in an SEV-ES guest, the same #VC) without a C++ throw, for the
    // intercepts every world switch of an SEV guest goes through (CPUID, IN/OUT, RDMSR/WRMSR,
    // HLT, VMMCALL, VMGEXIT): a throw and its unwind cost more than the rest of the #VMEXIT
    // (perf: a third of an SEV guest's CPUID round trip). Only a handler may call it, and it
    // must return at once, having changed nothing: the instruction does not retire (RIP stays
    // on it, unless an SEV-ES automatic exit advances it) and the block ends; run() then takes
    // the exit, or delivers the #VC, exactly where it would have caught the throw.
    void intercept_return(svm::Intercept i, uint64_t info1 = 0, uint64_t info2 = 0);
    void vmexit_return(uint64_t code, uint64_t info1, uint64_t info2, uint64_t nrip);
    enum class Deferred : uint8_t { None, Exit, Fault };
    Deferred deferred { Deferred::None };
    svm::ExitInfo deferred_exit {};
    GuestFault deferred_fault {};
    void do_vmexit(svm::ExitInfo info);  // the #VMEXIT itself (at an instruction boundary)
    void do_vmrun(uint64_t next_rip);    // VMRUN rAX from the host
    // The same with the host's registers already in `v` (not yet in the core: host_vmrun()
    // builds them there and VMLOADs into them, sparing two register-file round trips).
    void do_vmrun(uint64_t next_rip, svm::SvmCpuView& v);
    svm::SvmCpuView svm_view();
    void svm_apply(svm::SvmCpuView const&);
    svm::HostContext host_context() { return host_context_of(msr.syscfg, msr.hwcr, mode64); }
    svm::HostContext host_context_of(uint64_t syscfg, uint64_t hwcr, bool host_64bit) const
    {
        svm::HostContext h = model_host_context;
        h.syscfg = syscfg;
        h.hwcr = hwcr;
        h.host_64bit = host_64bit;
        return h;
    }
    svm::HostContext model_host_context; // HostContext::from_model(info) once, at construction
    // host_vmrun(): the VMCB whose VMSAVE follows #VMEXIT at once (do_vmexit does it before the
    // host's registers go back into the core), and whether it failed.
    Spa host_vmrun_vmcb {};
    bool host_vmsave_failed {};
    void host_vmsave(svm::SvmCpuView&);
    struct GuestPage { uint64_t spa; mmu::KeyId key; };
    GuestPage guest_page(uint64_t gpa_page, bool guest_c, bool write, bool fetch);
    bool check_guest_interrupts();      // virtual interrupts / INTR intercept; true if it acted
    void deliver_guest_interrupt(uint8_t vector);
    void deliver_injected(svm::Event const&);
    // The registers only (what SVM's world switches move); the run state (halted, shadow, GIF,
    // guest mode, the instruction count) is left alone by put_state() — svm_apply() uses it.
    CpuState get_state();
    void put_state(CpuState const&);
    // Everything (Cpu::state/set_state).
    CpuState get_full_state();
    void put_full_state(CpuState const&);

    mmu::MemoryController& mc;
    CpuModel model;
    CpuModelInfo const& info;
    IoHandler& io;
    // INTR is polled (io.interrupt_pending()) only when it may have changed since it last read
    // false: the interrupt controllers change only inside a call into the machine (port I/O,
    // MMIO, an APIC MSR, an INTA cycle: all go through dev()) or between run() calls (timers
    // fire by the machine's clock between time slices, other vCPUs' IPIs, the QMP/migration
    // requests). The answer is the same as polling before every block, at a fraction of the
    // cost (the LAPIC's priority scan was ~5 % of a Linux boot, perf).
    bool intr_poll { true };
    IoHandler& dev() { intr_poll = true; return io; }
    bool poll_intr()
    {
        bool pending = io.interrupt_pending();
        intr_poll = pending;
        return pending;
    }
    // CPUID's fixed inputs (Cpu::set_topology, set_cpuid_view, set_apic_caps); osxsave and
    // apic_enabled are filled from CR4/APIC_BASE at each CPUID.
    CpuidContext cpuid_ctx { .view = CpuidView::Guest };
    EntropySource* entropy {}; // RDRAND/RDSEED; null: getrandom(2)
    CpuidResult cpuid(uint32_t leaf, uint32_t subleaf) const;
    // RDRAND/RDSEED: false when no entropy is available now (the instruction's CF=0).
    bool random_u64(uint64_t& out);
    mmu::PagingContext pctx;
    CpuStats stats;

    // ---- Decoded-code cache
    // 16384 (512 KiB): with 4096, a PVH boot's misses that fell through to the block map's
    // lookup (decode_block) were ~4.5 % of its time (perf); A/B ~4 % less user CPU.
    static constexpr size_t kJumpEntries = 16384;
    static constexpr size_t kMaxBlocks = 1u << 17;
    std::unique_ptr<JumpEntry[]> jc { new JumpEntry[kJumpEntries] };
    // flush_jump_cache() moves to a new epoch instead of clearing the table: it runs at every
    // TLB flush, INVLPG, code invalidation and world switch.
    uint32_t jc_epoch { 1 };
    // Moved on by drop_jump_cache() when blocks are freed (code invalidation, the cache bound,
    // a block replaced by its alias). An entry of an older flush epoch but this code epoch
    // still points to a live block: it is taken again if the TLB maps its linear page for
    // fetch to the block's frame and key (lookup_block_miss), which spares the block map's
    // lookup after every CR3 write, INVLPG and SVM world switch.
    uint16_t code_epoch { 1 };
    std::unordered_map<uint64_t, std::unique_ptr<Block>> blocks;   // key: spa << 2 | mode
    std::unordered_map<uint64_t, std::vector<uint64_t>> code_pages; // pfn -> block keys
    std::vector<std::unique_ptr<Block>> graveyard;
    Block scratch;
    std::shared_ptr<Core*> self_ref;
    // The other cores of the machine, which share its guest memory (Cpu::share_code_with): a
    // write by any core to a page some core decoded code from drops that code in every core
    // (cross-modifying code: Linux text_poke_bp patches kernel text while the APs run). Null
    // for a lone core, which then pays nothing.
    std::shared_ptr<std::vector<Core*>> peers;

    // ---- Lazy flags (APM vol 3 Appendix E for which flags each instruction defines)
    static uint64_t msb(uint8_t size) { return size * 8 - 1; }
    void set_lazy(LfKind k, uint64_t a, uint64_t b, uint64_t res, uint8_t size)
    {
        lf_kind = k; lf_a = a; lf_b = b; lf_res = res; lf_size = size;
    }
    [[gnu::always_inline]] bool get_cf() const
    {
        switch (lf_kind) {
        case LF_NONE: return flags & rflags::CF;
        case LF_ADD: return (((lf_a & lf_b) | ((lf_a ^ lf_b) & ~lf_res)) >> msb(lf_size)) & 1;
        case LF_SUB: return (((~lf_a & lf_b) | (~(lf_a ^ lf_b) & lf_res)) >> msb(lf_size)) & 1;
        case LF_LOGIC: return false;
        default: return lf_cf & 1;
        }
    }
    [[gnu::always_inline]] bool get_zf() const
    {
        if (lf_kind == LF_NONE) return flags & rflags::ZF;
        return (lf_res << (63 - msb(lf_size))) == 0;
    }
    [[gnu::always_inline]] bool get_sf() const
    {
        if (lf_kind == LF_NONE) return flags & rflags::SF;
        return (lf_res >> msb(lf_size)) & 1;
    }
    [[gnu::always_inline]] bool get_of() const
    {
        switch (lf_kind) {
        case LF_NONE: return flags & rflags::OF;
        case LF_ADD: case LF_INC: return (((lf_a ^ lf_res) & (lf_b ^ lf_res)) >> msb(lf_size)) & 1;
        case LF_SUB: case LF_DEC: return (((lf_a ^ lf_b) & (lf_a ^ lf_res)) >> msb(lf_size)) & 1;
        case LF_CFOF: return (lf_cf >> 1) & 1;
        default: return false;
        }
    }
    [[gnu::always_inline]] bool get_pf() const
    {
        if (lf_kind == LF_NONE) return flags & rflags::PF;
        return !__builtin_parity(uint8_t(lf_res));
    }
    bool get_af() const
    {
        if (lf_kind == LF_NONE) return flags & rflags::AF;
        if (lf_kind == LF_LOGIC || lf_kind == LF_CFOF) return false;
        return ((lf_a ^ lf_b ^ lf_res) >> 4) & 1;
    }
    void materialize()
    {
        if (lf_kind == LF_NONE) return;
        uint64_t f = flags & ~rflags::kArith;
        f |= get_cf() ? rflags::CF : 0;
        f |= get_pf() ? rflags::PF : 0;
        f |= get_af() ? rflags::AF : 0;
        f |= get_zf() ? rflags::ZF : 0;
        f |= get_sf() ? rflags::SF : 0;
        f |= get_of() ? rflags::OF : 0;
        flags = f;
        lf_kind = LF_NONE;
    }
    uint64_t get_rflags() { materialize(); return flags; }
    // cond() for a condition known at compile time (Jcc/SETcc/CMOVcc are instantiated per
    // condition): no switch on the condition, the flag getters inlined.
    template <unsigned CC> [[gnu::always_inline]] bool cond_c() const
    {
        bool v;
        if constexpr ((CC >> 1) == 0) v = get_of();
        else if constexpr ((CC >> 1) == 1) v = get_cf();
        else if constexpr ((CC >> 1) == 2) v = get_zf();
        else if constexpr ((CC >> 1) == 3) v = get_cf() || get_zf();
        else if constexpr ((CC >> 1) == 4) v = get_sf();
        else if constexpr ((CC >> 1) == 5) v = get_pf();
        else if constexpr ((CC >> 1) == 6) v = get_sf() != get_of();
        else v = get_zf() || (get_sf() != get_of());
        return v ^ (CC & 1);
    }
    bool cond(unsigned cc) const
    {
        bool v;
        switch (cc >> 1) {
        case 0: v = get_of(); break;
        case 1: v = get_cf(); break;
        case 2: v = get_zf(); break;
        case 3: v = get_cf() || get_zf(); break;
        case 4: v = get_sf(); break;
        case 5: v = get_pf(); break;
        case 6: v = get_sf() != get_of(); break;
        default: v = get_zf() || (get_sf() != get_of()); break;
        }
        return v ^ (cc & 1);
    }

    // ---- Faults
    [[noreturn]] void raise(uint8_t v) { throw GuestFault { v, false, 0 }; }
    [[noreturn]] void raise(uint8_t v, uint32_t e) { throw GuestFault { v, true, e }; }

    // ---- Registers by byte offset
    template <int S> U<S> getr(uint8_t off) const
    {
        U<S> v;
        std::memcpy(&v, reinterpret_cast<uint8_t const*>(r) + off, S);
        return v;
    }
    template <int S> void setr(uint8_t off, uint64_t v)
    {
        if constexpr (S == 4) {
            *reinterpret_cast<uint64_t*>(reinterpret_cast<uint8_t*>(r) + off) = uint32_t(v);
        } else {
            U<S> t = U<S>(v);
            std::memcpy(reinterpret_cast<uint8_t*>(r) + off, &t, S);
        }
    }

    // ---- Segmentation
    uint64_t seg_lin(unsigned s, uint64_t ea, unsigned size, bool write)
    {
        if (SEVEMU_LIKELY(mode64))
            return ea + seg_base[s];
        if (SEVEMU_UNLIKELY(ea < seg_lo[s] || ea + size - 1 > seg_hi[s] || !(seg_acc[s] & (write ? 2 : 1))))
            seg_fault(s);
        return uint32_t(ea + seg_base[s]);
    }
    [[noreturn]] void seg_fault(unsigned s) { raise(s == SS ? SS_ : GP, 0); }
    uint64_t ea(Insn const& i) const
    {
        return (r[i.base] + (r[i.index] << i.scale) + uint64_t(int64_t(i.disp))) & kAsizeMask[i.asize];
    }
    uint64_t lin(Insn const& i, unsigned size, bool write) { return seg_lin(i.seg, ea(i), size, write); }

    // ---- Memory by linear address
    // Inlined into the handlers: a call per memory access cost more than the access (profile).
    template <class T> [[gnu::always_inline]] T rd(uint64_t a)
    {
        auto& e = tlb->entry(bank, a);
        if (SEVEMU_LIKELY(e.tag_read == (a >> 12) && (a & 0xFFF) <= 0x1000 - sizeof(T))) {
            T v;
            std::memcpy(&v, e.host + (a & 0xFFF), sizeof(T));
            return v;
        }
        T v;
        read_slow(a, &v, sizeof(T), false);
        return v;
    }
    template <class T> [[gnu::always_inline]] void wr(uint64_t a, T v)
    {
        auto& e = tlb->entry(bank, a);
        if (SEVEMU_LIKELY(e.tag_write == (a >> 12) && (a & 0xFFF) <= 0x1000 - sizeof(T))) {
            std::memcpy(e.host + (a & 0xFFF), &v, sizeof(T));
            return;
        }
        write_slow(a, &v, sizeof(T));
    }
    // Implicit supervisor accesses (descriptor tables, TSS, IDT) ignore CPL (APM vol 2 §5.6.4).
    template <class T> T rd_sys(uint64_t a)
    {
        T v;
        sys_access(a, &v, sizeof(T), false);
        return v;
    }
    template <class T> void wr_sys(uint64_t a, T v) { sys_access(a, &v, sizeof(T), true); }
    // Stack writes of event delivery, with the privilege of the new CPL.
    template <class T> void wr_stack_sup(uint64_t a, T v, unsigned new_cpl) { sys_access(a, &v, sizeof(T), true, new_cpl == 3); }
    uint64_t pop_n(unsigned osize) { return osize == 8 ? pop<8>() : osize == 4 ? pop<4>() : pop<2>(); }

    void read_slow(uint64_t a, void* out, unsigned n, bool fetch);
    void write_slow(uint64_t a, void const* in, unsigned n);
    void sys_access(uint64_t a, void* buf, unsigned n, bool write, bool as_user = false);
    struct Xlate { uint64_t spa; uint8_t* host; mmu::KeyId key; };
    // map=false: the walk and its checks only, no page pointer (x.host stays null) and no TLB
    // fill — for CLFLUSH, which names a frame but must not pull it into the plaintext cache.
    Xlate translate(uint64_t a, bool write, bool fetch, bool implicit_sup = false, bool map = true);
    size_t fetch_bytes(uint64_t a, uint8_t* out, size_t n); // stops at a faulting page

    // ---- Stack
    uint64_t stack_mask() const { return mode64 ? ~0ull : (seg[SS].big() ? 0xFFFFFFFFull : 0xFFFF); }
    template <int S> void push(uint64_t v)
    {
        uint64_t m = stack_mask();
        uint64_t sp = (r[RSP] - S) & m;
        wr<U<S>>(seg_lin(SS, sp, S, true), U<S>(v));
        r[RSP] = (r[RSP] & ~m) | sp;
    }
    template <int S> U<S> pop()
    {
        uint64_t m = stack_mask();
        uint64_t sp = r[RSP] & m;
        U<S> v = rd<U<S>>(seg_lin(SS, sp, S, false));
        r[RSP] = (r[RSP] & ~m) | ((sp + S) & m);
        return v;
    }

    // ---- System architecture (APM vol 2; exec_control.cpp: CRs, RFLAGS, MSRs; exec_segments.cpp:
    // segment loads and descriptors; exec_far.cpp: far transfers; exec_events.cpp: interrupts,
    // exceptions, IRET; exec_io.cpp: the I/O permission check)
    void update_mode();          // after CR0/CR4/EFER/CS/SS changes
    void update_seg_cache(unsigned s);
    void update_paging();        // recompute the walk context (and flush the TLB)
    void flush_tlb(bool include_global);
    void set_cr0(uint64_t v);
    void set_cr3(uint64_t v);
    void set_cr4(uint64_t v);
    void set_efer(uint64_t v);
    void set_rflags(uint64_t v, uint64_t writable_mask);
    uint64_t writable_flags_mask() const;
    void load_seg(unsigned s, uint16_t sel);               // MOV/POP Sreg, LxS
    uint64_t read_descriptor(uint16_t sel, uint8_t vec);   // #GP/#TS(sel) on limit
    void set_accessed(uint16_t sel, uint64_t desc);
    static Segment seg_from_desc(uint16_t sel, uint64_t d, uint64_t d_hi = 0);
    void far_jump(uint16_t sel, uint64_t off, bool call, unsigned osize, uint64_t ret_rip);
    // What far RET and IRET share (exec_far.cpp): the checks on the CS they return to, the SS of
    // a return to an outer level, and the data segments that level may not keep.
    Segment check_return_cs(uint16_t sel);
    Segment load_outer_ss(uint16_t ss_sel, unsigned rpl, bool target64);
    void null_inaccessible_data_segments();
    void far_return(unsigned osize, uint16_t pop_extra);
    void iret(unsigned osize);
    // fault: a fault-class exception, whose pushed RFLAGS image has RF set (APM vol 2 §13.1.3.4)
    void deliver_event(uint8_t vec, bool has_err, uint32_t err, bool software, uint64_t return_rip, bool fault = false);
    void exception(GuestFault const& f);          // with double/triple-fault escalation
    // ---- Hardware task switches (exec_task.cpp; APM vol 2 §12, legacy protected mode only)
    enum class TaskSrc : uint8_t { Jmp, Call, Iret, Event };
    void task_far(uint16_t sel, uint64_t desc, bool call);   // JMP/CALL to a TSS or a task gate
    void task_return();                                      // IRET with EFLAGS.NT = 1
    void task_gate_event(uint64_t gate, bool has_err, uint32_t err, uint32_t ext, uint64_t ret_eip);
    void task_switch(uint16_t sel, uint64_t desc, TaskSrc src, uint32_t ext, bool has_err, uint32_t err, uint64_t ret_eip);
    bool io_allowed(uint16_t port, unsigned size);
    bool rdmsr(uint32_t idx, uint64_t& v);
    bool wrmsr(uint32_t idx, uint64_t v);
    uint64_t read_tsc() const { return icount + uint64_t(tsc_offset); }

    // ---- Decoded code (cpu.cpp)
    // prev: the block that ran just before (its links are tried first), or null.
    // Sets first/count to the block's instructions. The block is cached (may be linked) unless
    // it is `scratch`.
    Block* lookup_block(Block* prev, Insn const*& first, uint32_t& count);
    [[gnu::noinline]] Block* lookup_block_miss(uint64_t lin, uint32_t tag, JumpEntry& e);
    Block* decode_block(uint64_t lin, uint64_t spa);
    // The linear page after lin's, as an instruction fetch running on from lin reaches it.
    uint64_t next_page(uint64_t lin) const
    {
        uint64_t a = (lin | 0xFFF) + 1;
        return (efer & efer::LMA) ? a : uint32_t(a);
    }
    bool second_page_ok(Block const& b) const
    {
        if (SEVEMU_LIKELY(b.spa2 == Block::kNoSpa2)) return true;
        uint64_t a2 = next_page(b.lin);
        auto const& te = tlb->entry(bank, a2);
        auto const& tm = tlb->meta(bank, a2);
        return te.tag_fetch == (a2 >> 12) && tm.spa_page == b.spa2 && tm.key == b.key2;
    }
    void invalidate_code_page(uint64_t pfn); // this core's and the peers'
    void invalidate_own_code_page(uint64_t pfn);
    bool is_code_page(uint64_t pfn) const
    {
        return code_pages.count(pfn) != 0 || (SEVEMU_UNLIKELY(peers != nullptr) && peer_code_page(pfn));
    }
    bool peer_code_page(uint64_t pfn) const;
    void flush_jump_cache();  // translations changed
    void drop_jump_cache();   // blocks freed

    void reset();
};

// Inside a block, icount lags by the instructions retired earlier in that block (run() adds
// them after the block). An instruction that reads or writes the TSC makes icount exact for its
// duration, so that the TSC does not depend on where blocks start — which a restored snapshot
// changes (it resumes mid-block).
struct IcountNow {
    Core& c;
    uint64_t adj;
    IcountNow(Core& core, Insn const& i) : c(core), adj(uint64_t(&i - core.block_first)) { c.icount += adj; }
    ~IcountNow() { c.icount -= adj; }
};

// Guest page walks under nested paging (exec_svm.cpp).
std::unique_ptr<mmu::TableResolver> make_guest_tables(Core&);

// Decoder (decode.cpp). Returns the instruction length, 0 when more bytes are needed.
unsigned decode_one(uint8_t const* bytes, size_t avail, uint8_t mode, Insn& out);
std::string disassemble_insn(Insn const& i, uint64_t rip);

} // namespace sevemu::cpu
