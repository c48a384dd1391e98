// sevemu — the run loop, the memory paths behind the TLB, the decoded-block cache and the
// public Cpu interface.
#include "cpu/ops.h"

#include <algorithm>

namespace sevemu::cpu {

using namespace rflags;

std::string_view stop_reason_name(StopReason r)
{
    switch (r) {
    case StopReason::InstructionLimit: return "instruction-limit";
    case StopReason::Halted: return "halted";
    case StopReason::Shutdown: return "shutdown";
    case StopReason::StopRequested: return "stop-requested";
    case StopReason::VmExit: return "vmexit";
    }
    return "?";
}

Core::Core(mmu::MemoryController& m, CpuModel mdl, IoHandler& i)
    : mc(m)
    , model(mdl)
    , info(cpu_model_info(mdl))
    , io(i)
{
    guest_tables = make_guest_tables(*this);
    model_host_context = svm::HostContext::from_model(info, CpuState {}, true);
    self_ref = std::make_shared<Core*>(this);
    std::weak_ptr<Core*> weak = self_ref;
    mc.add_invalidation_listener([weak](Spa page) {
        if (auto p = weak.lock()) {
            Core& c = **p;
            c.for_each_tlb([&](auto& t) { t.flush_spa(page.page_base().value); });
            if (c.is_code_page(page.pfn()))
                c.invalidate_code_page(page.pfn());
        }
    });
    reset();
}

void Core::reset()
{
    // APM vol 2 §14.1.3, Table 14-1 (initial processor state).
    std::fill(std::begin(r), std::end(r), 0);
    r[RDX] = cpuid_query(model, 1, 0).eax;
    rip = 0xFFF0;
    flags = 2;
    lf_kind = LF_NONE;
    for (auto& s : seg)
        s = Segment { 0, 0x93, 0xFFFF, 0 };
    seg[CS] = Segment { 0xF000, 0x9B, 0xFFFF, 0xFFFF0000 };
    ldtr = Segment { 0, 0x82, 0xFFFF, 0 };
    tr = Segment { 0, 0x8B, 0xFFFF, 0 };
    gdtr = idtr = { 0, 0xFFFF };
    cr0 = 0x60000010;
    cr2 = cr3 = cr4 = cr8 = 0;
    efer = 0;
    xcr0 = 1;
    for (auto& d : dr) d = 0;
    dr6 = 0xFFFF0FF0;
    dr7 = 0x400;
    msr = MsrState {};
    // APIC_BASE.BSC (bit 8): set on the bootstrap processor only, the vCPU with APIC ID 0 (as
    // QEMU's CPU 0; APM vol 2 §16.3.1).
    if (cpuid_ctx.apic_id != 0)
        msr.apic_base &= ~(1ull << 8);
    for (auto& x : xmm) x[0] = x[1] = 0;
    mxcsr = 0x1F80;
    for (auto& f : fpr) f = 0;
    fcw = 0x40; // FINIT sets 0x37F; the reset value is 0x0040 (APM vol 2 Table 14-1)
    fsw = 0;
    ftag_empty = 0xFF;
    tsc_offset = 0;
    halted = irq_shadow = pending_shutdown = nmi_pending = nmi_blocked = false;
    stop_requested = false;
    update_mode();
    update_paging();
}

// ---------------------------------------------------------------- memory

namespace {
bool canonical(uint64_t a) { return uint64_t(int64_t(a << 16) >> 16) == a; }
}

Core::Xlate Core::translate(uint64_t a, bool write, bool fetch, bool implicit_sup, bool map)
{
    if ((efer & efer::LMA) && !canonical(a)) raise(GP, 0);
    bool user = !implicit_sup && cpl == 3;
    mmu::AccessKind acc { write, user, fetch, implicit_sup, bool(flags & AC) };
    auto t = mmu::walk(mc, pctx, a, acc);
    if (!t) {
        auto const& f = t.error();
        if (f.nested) // a guest page-table access failed its nested walk
            vmexit_now(svm::exitcode::SVM_EXIT_NPF, f.nested_info1, f.nested_info2, 0);
        // An intercepted #PF leaves the guest's CR2 alone; EXITINFO2 has the address (§15.12).
        if (SEVEMU_UNLIKELY(guest.has_value()) && guest->intercepts_exception(PF_))
            vmexit_now(svm::exitcode::SVM_EXIT_EXCP_BASE + PF_, f.error_code, a, 0);
        cr2 = a;
        raise(PF_, f.error_code);
    }
    ++stats.tlb_misses;
    uint64_t page = t->page.value;
    mmu::KeyId key = mmu::KeyId::none();
    if (SEVEMU_UNLIKELY(guest.has_value()) && guest->np) {
        // Guest-physical -> system-physical, and the key of this access (SEV).
        auto g = guest_page(page | (a & 0xFFF), t->encrypted, write, fetch);
        page = g.spa;
        key = g.key;
    } else {
        key = pctx.mode == mmu::PagingMode::None ? mmu::KeyId::none() : mmu::key_for(pctx, t->encrypted);
    }
    Xlate x { page | (a & 0xFFF), nullptr, key };
    if (map && mc.is_dram(Spa(page))) {
        auto p = mc.page_pointer(Spa(page), key, write ? mmu::Access::Write : mmu::Access::Read);
        if (!p) {
            // The key slot is unusable (never programmed): the access sees raw DRAM (QUIRKS.md).
            x.key = mmu::KeyId::none();
            p = mc.page_pointer(Spa(page), x.key, write ? mmu::Access::Write : mmu::Access::Read);
        }
        if (p)
            x.host = *p;
    }
    // Implicit supervisor accesses fill the supervisor bank (sys_access), under the same rule.
    if (x.host && !(user == false && t->user && pctx.smap)) {
        auto [e, m] = tlb->fill(user ? 1 : 0, a, page);
        uint64_t lpn = a >> 12;
        if (m.lpn != lpn || e.host != x.host) {
            e.tag_read = e.tag_write = e.tag_fetch = mmu::TlbEntry::kInvalid;
            m.lpn = lpn;
            e.host = x.host;
            m.spa_page = page;
            m.key = x.key;
        }
        m.global = t->global;
        e.tag_read = lpn;
        if (fetch) e.tag_fetch = lpn;
        if (write && !is_code_page(page >> 12)) e.tag_write = lpn;
    }
    return x;
}

void Core::read_slow(uint64_t a, void* out, unsigned n, bool fetch)
{
    uint8_t* o = static_cast<uint8_t*>(out);
    while (n) {
        unsigned chunk = std::min<unsigned>(n, 0x1000 - (a & 0xFFF));
        // A page the TLB maps for this access (the halves of a page-crossing read, the bytes
        // of an instruction that crosses into the next page) needs no walk.
        auto const& te = tlb->entry(bank, a);
        if ((fetch ? te.tag_fetch : te.tag_read) == (a >> 12)) {
            std::memcpy(o, te.host + (a & 0xFFF), chunk);
            o += chunk;
            n -= chunk;
            a = (efer & efer::LMA) ? a + chunk : uint32_t(a + chunk);
            continue;
        }
        Xlate x = translate(a, false, fetch);
        if (x.host) {
            std::memcpy(o, x.host + (a & 0xFFF), chunk);
        } else if (chunk == 1 || chunk == 2 || chunk == 4 || chunk == 8) {
            brk = true; // a device may have asked the CPU to stop or raised an interrupt
            uint64_t v = dev().mmio_read(Spa(x.spa), uint8_t(chunk));
            std::memcpy(o, &v, chunk);
        } else {
            for (unsigned k = 0; k < chunk; ++k)
                o[k] = uint8_t(dev().mmio_read(Spa(x.spa + k), 1));
        }
        o += chunk;
        n -= chunk;
        a = (efer & efer::LMA) ? a + chunk : uint32_t(a + chunk);
    }
}

void Core::write_slow(uint64_t a, void const* in, unsigned n)
{
    uint8_t const* s = static_cast<uint8_t const*>(in);
    // Translate every page first, so a fault on the second page leaves memory untouched.
    unsigned first = std::min<unsigned>(n, 0x1000 - (a & 0xFFF));
    uint64_t a2 = (efer & efer::LMA) ? a + first : uint32_t(a + first);
    if (first < n) {
        // Both pages writable in the TLB (so neither holds decoded code): no walk.
        auto const& e1 = tlb->entry(bank, a);
        auto const& e2 = tlb->entry(bank, a2);
        if (e1.tag_write == (a >> 12) && e2.tag_write == (a2 >> 12)) {
            std::memcpy(e1.host + (a & 0xFFF), s, first);
            std::memcpy(e2.host + (a2 & 0xFFF), s + first, n - first);
            return;
        }
    }
    Xlate x1 = translate(a, true, false);
    Xlate x2 { 0, nullptr, mmu::KeyId::none() };
    if (first < n) {
        x2 = translate(a2, true, false);
        x1 = translate(a, true, false); // the second translation may have evicted the first pointer
    }
    auto put = [&](Xlate const& x, uint64_t la, uint8_t const* src, unsigned len) {
        uint64_t pfn = x.spa >> 12;
        if (x.host) {
            if (is_code_page(pfn))
                invalidate_code_page(pfn); // self-modifying code
            std::memcpy(x.host + (la & 0xFFF), src, len);
        } else if (len == 1 || len == 2 || len == 4 || len == 8) {
            brk = true;
            uint64_t v = 0;
            std::memcpy(&v, src, len);
            dev().mmio_write(Spa(x.spa), uint8_t(len), v);
        } else {
            for (unsigned k = 0; k < len; ++k)
                dev().mmio_write(Spa(x.spa + k), 1, src[k]);
        }
    };
    put(x1, a, s, first);
    if (first < n)
        put(x2, a2, s + first, n - first);
}

void Core::sys_access(uint64_t a, void* buf, unsigned n, bool write, bool as_user)
{
    uint8_t* b = static_cast<uint8_t*>(buf);
    uint8_t saved_cpl = cpl;
    if (as_user) cpl = 3;
    struct Restore { Core& c; uint8_t v; ~Restore() { c.cpl = v; } } restore { *this, saved_cpl };
    // The TLB's supervisor bank serves implicit supervisor accesses too. Its entries were filled
    // by supervisor accesses that passed the checks an implicit one makes (U/S does not apply,
    // CR0.WP does; A, and D for a write tag, already set), and a user page enters it only while
    // CR4.SMAP is clear: SMAP faults an implicit access to a user page whatever RFLAGS.AC says
    // (APM vol 2 §5.6.4). A write tag is never given for a page of decoded code. Without this
    // every event delivery (IDT, GDT, the pushes; an SEV-ES guest's #VC) walked the guest's
    // tables, and under nested paging the nested tables at every level (perf).
    unsigned tlb_bank = as_user ? 1 : 0;
    while (n) {
        unsigned chunk = std::min<unsigned>(n, 0x1000 - (a & 0xFFF));
        if (auto const& te = tlb->entry(tlb_bank, a); (write ? te.tag_write : te.tag_read) == (a >> 12)) {
            uint8_t* page = te.host + (a & 0xFFF);
            uint8_t* dst = write ? page : b;
            uint8_t const* src = write ? b : page;
            // The sizes of descriptors and stack slots as fixed-size copies (a variable-size
            // one is a `rep movs`, whose start-up cost was most of this function's, perf).
            switch (chunk) {
            case 8: std::memcpy(dst, src, 8); break;
            case 4: std::memcpy(dst, src, 4); break;
            case 2: std::memcpy(dst, src, 2); break;
            default: std::memcpy(dst, src, chunk); break;
            }
            b += chunk;
            n -= chunk;
            a = (efer & efer::LMA) ? a + chunk : uint32_t(a + chunk);
            continue;
        }
        Xlate x = translate(a, write, false, !as_user);
        uint64_t pfn = x.spa >> 12;
        if (x.host) {
            if (write) {
                if (is_code_page(pfn)) invalidate_code_page(pfn);
                // The pointer may have been dropped by the invalidation; fetch it again.
                x = translate(a, write, false, !as_user);
                std::memcpy(x.host + (a & 0xFFF), b, chunk);
            } else {
                std::memcpy(b, x.host + (a & 0xFFF), chunk);
            }
        } else {
            for (unsigned k = 0; k < chunk; ++k) {
                if (write) dev().mmio_write(Spa(x.spa + k), 1, b[k]);
                else b[k] = uint8_t(dev().mmio_read(Spa(x.spa + k), 1));
            }
        }
        b += chunk;
        n -= chunk;
        a = (efer & efer::LMA) ? a + chunk : uint32_t(a + chunk);
    }
}

// ---------------------------------------------------------------- decoded code

void Core::flush_jump_cache()
{
    if (++jc_epoch < (1u << 24))
        return;
    // The epoch starts over: no entry or link made under an old epoch may match again.
    for (size_t k = 0; k < kJumpEntries; ++k)
        jc[k] = JumpEntry {};
    for (auto& [key, b] : blocks)
        b->link[0] = b->link[1] = BlockLink {};
    jc_epoch = 1;
}

void Core::drop_jump_cache()
{
    flush_jump_cache();
    if (++code_epoch != 0)
        return;
    for (size_t k = 0; k < kJumpEntries; ++k)
        jc[k] = JumpEntry {};
    code_epoch = 1;
}

void Core::invalidate_code_page(uint64_t pfn)
{
    invalidate_own_code_page(pfn);
    if (SEVEMU_UNLIKELY(peers != nullptr))
        for (Core* p : *peers)
            if (p != this)
                p->invalidate_own_code_page(pfn);
}

bool Core::peer_code_page(uint64_t pfn) const
{
    for (Core const* p : *peers)
        if (p != this && p->code_pages.count(pfn))
            return true;
    return false;
}

void Core::invalidate_own_code_page(uint64_t pfn)
{
    auto it = code_pages.find(pfn);
    if (it == code_pages.end()) return;
    for (uint64_t key : it->second) {
        auto b = blocks.find(key);
        if (b != blocks.end()) {
            graveyard.push_back(std::move(b->second)); // may be executing right now
            blocks.erase(b);
        }
    }
    code_pages.erase(it);
    drop_jump_cache();
    ++stats.code_invalidations;
    brk = true;
}

Block* Core::decode_block(uint64_t lin, uint64_t)
{
    // A jump-cache miss on a page the TLB already maps for execution needs no walk.
    auto const& te = tlb->entry(bank, lin);
    auto const& tm = tlb->meta(bank, lin);
    Xlate x = SEVEMU_LIKELY(te.tag_fetch == (lin >> 12)) ? Xlate { tm.spa_page | (lin & 0xFFF), te.host, tm.key }
                                                         : translate(lin, false, true);
    uint64_t pfn = x.spa >> 12;
    // The same frame decrypts differently under another key (an SEV guest's private code vs the
    // hypervisor's view): the key is part of the block's identity.
    uint64_t key = ((x.spa << 2) | mode) ^ (uint64_t(x.key.slot_number() & 0x3FF) << 54);
    if (x.host) {
        auto it = blocks.find(key);
        // Same linear address: same page split (and, for an instruction that runs onto the
        // next page, that page still the same frame: when the TLB no longer maps it, the
        // walk a fresh decode would make, with its #PF, in the same order).
        if (it != blocks.end() && it->second->lin == lin) {
            Block* b = it->second.get();
            if (b->spa2 != Block::kNoSpa2 && !second_page_ok(*b))
                translate(next_page(lin), false, true);
            if (second_page_ok(*b))
                return b;
        }
        if (it != blocks.end()) {
            graveyard.push_back(std::move(it->second));
            blocks.erase(it);
            drop_jump_cache(); // the jump cache may hold it under its other linear address
        }
    }
    unsigned off = unsigned(lin & 0xFFF);
    unsigned avail = 0x1000 - off;
    uint8_t mmio_buf[0x1000];
    uint8_t const* src;
    if (x.host) {
        src = x.host + off;
    } else {
        for (unsigned k = 0; k < avail; ++k)
            mmio_buf[k] = uint8_t(dev().mmio_read(Spa(x.spa + k), 1));
        src = mmio_buf;
    }
    auto blk = std::make_unique<Block>();
    blk->lin = lin;
    blk->spa = x.spa;
    blk->mode = mode;
    blk->cached = x.host != nullptr;
    blk->key = x.key;
    unsigned pos = 0;
    while (pos < avail && blk->insns.size() < 256) {
        Insn insn;
        unsigned n = decode_one(src + pos, avail - pos, mode, insn);
        if (n == 0) {
            if (!blk->insns.empty()) break;
            // One instruction crossing into the next page: decode it alone.
            uint8_t tmp[16] {};
            unsigned have = avail - pos;
            std::memcpy(tmp, src + pos, have);
            uint64_t a2 = (efer & efer::LMA) ? lin + have : uint32_t(lin + have);
            // Its first byte on the next page (the fetch there faults as it must); when that
            // page is memory the TLB now maps for fetch, the rest of the 15 at once, one decode
            // (not one fetch and decode per byte: onto an MMIO page, such an instruction is
            // decoded at each run).
            read_slow(a2, tmp + have, 1, true);
            if (auto const& te = tlb->entry(bank, a2); te.tag_fetch == (a2 >> 12)) {
                std::memcpy(tmp + have + 1, te.host + (a2 & 0xFFF) + 1, 15 - have - 1);
                n = decode_one(tmp, 15, mode, insn);
                if (x.host && n != 0) {
                    // Both pages memory: a cached block of its own, which a write to either
                    // page drops (both are code pages) and which is found again only while
                    // the second page fetches from the same frame under the same key
                    // (second_page_ok). Uncached, it was decoded at every execution: a hot
                    // loop of the bzImage decompressor has one (perf: 9.6 million decodes, the
                    // block map's lookup, an allocation and two decodes each).
                    auto const& tm2 = tlb->meta(bank, a2);
                    blk->insns.assign(1, insn);
                    blk->spa2 = tm2.spa_page;
                    blk->key2 = tm2.key;
                    break;
                }
            } else {
                for (unsigned need = have + 1; n == 0 && need <= 15; ++need) {
                    if (need > have + 1) // MMIO: no byte beyond the instruction is read
                        read_slow(a2, tmp + have, need - have, true);
                    n = decode_one(tmp, need, mode, insn);
                }
            }
            scratch.insns.assign(1, insn);
            scratch.lin = lin;
            scratch.cached = false;
            ++stats.blocks_decoded;
            return &scratch;
        }
        blk->insns.push_back(insn);
        pos += n;
        if (insn.pfx & kPfxEnd) break;
    }
    ++stats.blocks_decoded;
    if (!blk->cached) {
        scratch = std::move(*blk);
        return &scratch;
    }
    if (blocks.size() >= kMaxBlocks) { // bound the cache: start over (rare; a cold re-decode)
        for (auto& [k, b] : blocks)
            graveyard.push_back(std::move(b));
        blocks.clear();
        code_pages.clear();
        drop_jump_cache();
        for_each_tlb([](auto& t) { t.flush_all(); });
    }
    Block* raw = blk.get();
    blocks[key] = std::move(blk);
    auto add_code_page = [&](uint64_t page) {
        auto& v = code_pages[page];
        if (v.empty()) {
            for_each_tlb([&](auto& t) { t.drop_write(page << 12); }); // writes to it must take the slow path, in every context
            if (SEVEMU_UNLIKELY(peers != nullptr)) // ... on every core
                for (Core* p : *peers)
                    if (p != this)
                        p->for_each_tlb([&](auto& t) { t.drop_write(page << 12); });
        }
        v.push_back(key);
    };
    add_code_page(pfn);
    if (raw->spa2 != Block::kNoSpa2 && (raw->spa2 >> 12) != pfn)
        add_code_page(raw->spa2 >> 12);
    return raw;
}

// The jump-cache hit is inlined into run(); a miss decodes (or finds the block by frame).
inline Block* Core::lookup_block(Block* prev, Insn const*& first, uint32_t& count)
{
    uint64_t lin;
    if (mode64) {
        lin = rip;
    } else {
        if (rip > seg[CS].limit && (cr0 & cr0::PE)) raise(GP, 0);
        lin = uint32_t(seg[CS].base + rip);
    }
    uint32_t tag = mode | (uint32_t(bank) << 2) | (jc_epoch << 8);
    if (prev) {
        for (BlockLink const& l : prev->link) {
            if (l.lin == lin && l.tag == tag) {
                first = l.first;
                count = l.count;
                return l.block;
            }
        }
    }
    // Two-way: the set is an even entry and the one after it (lookup_block_miss fills them).
    JumpEntry* set = &jc[(lin ^ (lin >> 12)) & (kJumpEntries - 2)];
    Block* b;
    if (SEVEMU_LIKELY(set[0].lin == lin && set[0].tag == tag)) {
        b = set[0].block;
        first = set[0].first;
        count = set[0].count;
    } else if (set[1].lin == lin && set[1].tag == tag) {
        b = set[1].block;
        first = set[1].first;
        count = set[1].count;
    } else {
        b = lookup_block_miss(lin, tag, set[0]);
        first = b->insns.data();
        count = uint32_t(b->insns.size());
    }
    if (prev && b != &scratch) {
        prev->link[prev->next_link] = BlockLink { lin, tag, count, b, first };
        prev->next_link ^= 1;
    }
    return b;
}

// set0: the first entry of lin's two-way set (the second follows it). Two ways, because in a
// direct-mapped cache pairs of hot blocks evicted each other (perf: ~3/4 of the misses that
// reached decode_block in a Linux boot were two addresses fighting over one entry).
Block* Core::lookup_block_miss(uint64_t lin, uint32_t tag, JumpEntry& set0)
{
    JumpEntry* set = &set0;
    // An entry for lin whose block is alive (same code epoch) and was made in this mode and
    // bank; only the translation may have changed since: the TLB says whether lin still
    // fetches from the block's frame under its key.
    for (unsigned w = 0; w < 2; ++w) {
        JumpEntry& e = set[w];
        if (e.lin == lin && ((e.tag ^ tag) & 0xFF) == 0 && e.code_epoch == code_epoch) {
            Block* b = e.block;
            auto const& te = tlb->entry(bank, lin);
            auto const& tm = tlb->meta(bank, lin);
            if (te.tag_fetch == (lin >> 12) && tm.spa_page == (b->spa & ~0xFFFull) && tm.key == b->key
                && second_page_ok(*b)) {
                e.tag = tag;
                return b;
            }
        }
    }
    Block* b = decode_block(lin, 0);
    if (b->cached) {
        // Replace lin's stale entry if the set has one, else the older way (the newest goes first).
        JumpEntry* e = set[1].lin == lin ? &set[1] : &set[0];
        if (set[0].lin != lin && set[1].lin != lin) {
            set[1] = set[0];
            e = &set[0];
        }
        e->lin = lin;
        e->tag = tag;
        e->code_epoch = code_epoch;
        e->count = uint16_t(b->insns.size());
        e->block = b;
        e->first = b->insns.data();
    }
    return b;
}

// ---------------------------------------------------------------- Cpu

Cpu::Cpu(mmu::MemoryController& mc, CpuModel model, IoHandler& io)
    : m_core(std::make_unique<Core>(mc, model, io))
{
}

Cpu::~Cpu()
{
    if (auto& peers = m_core->peers)
        std::erase(*peers, m_core.get());
}

void Cpu::share_code_with(Cpu& other)
{
    Core& o = *other.m_core;
    if (&o == m_core.get())
        return;
    if (!o.peers)
        o.peers = std::make_shared<std::vector<Core*>>(std::vector<Core*> { &o });
    m_core->peers = o.peers;
    m_core->peers->push_back(m_core.get());
}

void Cpu::set_topology(uint32_t apic_id, uint32_t vcpu_count)
{
    Core& c = *m_core;
    c.cpuid_ctx.apic_id = apic_id;
    c.cpuid_ctx.vcpu_count = vcpu_count ? vcpu_count : 1;
    if (apic_id != 0)
        c.msr.apic_base &= ~(1ull << 8);
    else
        c.msr.apic_base |= 1ull << 8;
}

uint32_t Cpu::apic_id() const { return m_core->cpuid_ctx.apic_id; }
uint32_t Cpu::vcpu_count() const { return m_core->cpuid_ctx.vcpu_count; }

void Cpu::set_cpuid_view(CpuidView v) { m_core->cpuid_ctx.view = v; }

void Cpu::set_apic_caps(bool x2apic, bool tsc_deadline)
{
    m_core->cpuid_ctx.x2apic = x2apic;
    m_core->cpuid_ctx.tsc_deadline = tsc_deadline;
}

void Cpu::set_entropy_source(EntropySource* e) { m_core->entropy = e; }

CpuidResult Cpu::cpuid(uint32_t leaf, uint32_t subleaf) const { return m_core->cpuid(leaf, subleaf); }

void Cpu::reset() { m_core->reset(); }

void Cpu::setup_multiboot_entry(uint32_t entry, uint32_t info)
{
    Core& c = *m_core;
    c.reset();
    c.cr0 = cr0::PE | cr0::ET;
    c.seg[CS] = Segment { 0x08, 0xC9B, 0xFFFFFFFF, 0 };
    for (unsigned s : { ES, SS, DS, FS, GS })
        c.seg[s] = Segment { 0x10, 0xC93, 0xFFFFFFFF, 0 };
    c.gdtr = { 0, 0 };
    c.idtr = { 0, 0 };
    c.flags = 2;
    c.r[RAX] = 0x2BADB002;
    c.r[RBX] = info;
    c.r[RDX] = 0;
    c.rip = entry;
    c.update_mode();
    c.update_paging();
}

RunResult Cpu::run(uint64_t max_instructions)
{
    Core& c = *m_core;
    uint64_t done = 0, events = 0;
    c.intr_poll = true; // the machine ran between calls
    // The block run last, while it is alive (the flush epoch is the one it was found under:
    // every freed block moves the epoch on), for its links.
    Block* prev = nullptr;
    uint32_t prev_epoch = 0;
    auto vmexit = [&c](SvmExit const& e) {
        c.brk = false;
        c.do_vmexit(e.info);
    };
    for (;;) {
        if (c.vmexit_done) // the guest of host_vmrun() left
            return { StopReason::VmExit, done };
        if (c.pending_shutdown) {
            // Shutdown in a guest that intercepts it is a #VMEXIT (APM vol 2 §15.12).
            if (c.guest && c.guest->intercepts(svm::Intercept::SHUTDOWN)) {
                c.pending_shutdown = false;
                c.do_vmexit({ svm::exitcode::SVM_EXIT_SHUTDOWN, 0, 0, std::nullopt, 0 });
                continue;
            }
            return { StopReason::Shutdown, done };
        }
        // A plain load on the common path (a MOV on x86); the locked exchange that clears the
        // flag runs only when it is set. Promptness is unchanged: the flag is still looked at
        // before every block, and a request_stop() from another thread that lands after the
        // load is seen at the next block, as it would have been before.
        if (SEVEMU_UNLIKELY(c.stop_requested.load(std::memory_order_relaxed))
            && c.stop_requested.exchange(false, std::memory_order_relaxed))
            return { StopReason::StopRequested, done };
        if (done + events >= max_instructions)
            return { StopReason::InstructionLimit, done };
        c.graveyard.clear();
        // External interrupts (APM vol 2 §8.1.3): sampled at instruction boundaries when IF=1
        // and not in the shadow of STI / MOV SS.
        if (SEVEMU_UNLIKELY(c.guest.has_value())) {
            // check_guest_interrupts() acts only on a latched NMI, a physical INTR that may be
            // pending (not under host_vmrun) or V_IRQ: skip the call when none can be (an SEV
            // guest's every block).
            bool maybe = c.nmi_pending || (!c.host_vmrun && c.gif && c.intr_poll)
                || (c.guest->control.int_ctl & svm::int_ctl::V_IRQ);
            bool acted = false;
            if (maybe) {
                try {
                    acted = c.check_guest_interrupts();
                } catch (SvmExit const& e) {
                    vmexit(e);
                    acted = true;
                }
            }
            if (acted) {
                ++events;
                continue;
            }
        } else if (SEVEMU_UNLIKELY(c.nmi_pending) && !c.nmi_blocked && c.gif && !c.irq_shadow && !c.host_vmrun) {
            // NMI (APM vol 2 §8.2.3): vector 2 whatever RFLAGS.IF, before INTR; further NMIs
            // are held until IRET. The STI/MOV SS shadow holds it for one instruction too (SDM
            // vol 3 §6.8.3, Table 25-3's "blocking by MOV SS"; KVM's svm_nmi_blocked).
            c.nmi_pending = false;
            c.nmi_blocked = true;
            c.halted = false;
            try {
                c.deliver_event(NMI, false, 0, false, c.rip);
            } catch (GuestFault const& f) {
                c.exception(f);
            }
            ++events;
            continue;
        } else if (c.gif && (c.flags & IF) && !c.irq_shadow && !c.host_vmrun && c.intr_poll && c.poll_intr()) {
            uint8_t v = c.dev().acknowledge_interrupt();
            c.halted = false;
            try {
                c.deliver_event(v, false, 0, false, c.rip);
            } catch (GuestFault const& f) {
                c.exception(f);
            }
            ++events; // as for exceptions: delivery counts against the budget
            continue;
        }
        if (c.halted)
            return { StopReason::Halted, done };
        bool shadow = c.irq_shadow;
        c.irq_shadow = false;
        c.brk = false;
        // RFLAGS.TF at the start of an instruction: #DB trap after it (APM vol 2 §13.1.3.1).
        bool single_step = c.flags & TF;
        uint64_t k = 0;
        Insn const* first = nullptr; // set once the block is found
        bool deferred = false;       // Core::intercept_return() ended the block
        try {
            Insn const* i;
            uint32_t count;
            Block* b = c.lookup_block(prev_epoch == c.jc_epoch ? prev : nullptr, i, count);
            prev = b != &c.scratch ? b : nullptr; // scratch: an MMIO block, or an instruction running onto an MMIO page
            prev_epoch = c.jc_epoch;
            uint64_t n = std::min<uint64_t>(count, max_instructions - done - events);
            if (shadow || single_step) n = 1;
            // n >= 1: the budget check above left at least one instruction.
            c.block_first = i;
            c.t_end = i + n;
            c.t_cur = i;
            c.rip_mask = c.mode64 ? ~0ull : 0xFFFFFFFFull;
            c.r[kRegNext] = (c.rip + i->len) & c.rip_mask;
            first = i;
            i->fn(c, *i); // runs up to n instructions (ops.h chain)
            k = uint64_t(c.t_cur - first);
            if (SEVEMU_UNLIKELY(c.deferred != Core::Deferred::None))
                deferred = true; // taken below, outside the try, as the catch clauses would
            else if (single_step && k == 1 && !c.halted) {
                c.dr6 |= 1u << 14; // BS
                c.deliver_event(DB, false, 0, false, c.rip);
            }
        } catch (GuestFault const& f) {
            if (first) k = uint64_t(c.t_cur - first); // the instructions before the faulting one
            c.brk = false;
            try {
                c.exception(f);
            } catch (SvmExit const& e) { // an intercepted exception (or an NPF while delivering)
                vmexit(e);
            }
            // An event delivery counts against the budget, so that a guest whose handler
            // faults again at once (a legal endless loop) still returns from run().
            if (k == 0)
                ++events;
        } catch (SvmExit const& e) { // an intercept: the instruction did not retire
            if (first) k = uint64_t(c.t_cur - first);
            vmexit(e);
            if (k == 0)
                ++events;
        }
        if (SEVEMU_UNLIKELY(deferred)) {
            // An intercept taken without a throw (Core::intercept_return): what the catch
            // clauses above do for SvmExit / GuestFault(#VC), the intercepted instruction not
            // retired (chain<> counted it: t_cur is one past it).
            --k;
            Core::Deferred d = c.deferred;
            c.deferred = Core::Deferred::None;
            c.brk = false;
            if (d == Core::Deferred::Exit) {
                c.do_vmexit(c.deferred_exit);
            } else {
                try {
                    c.exception(c.deferred_fault);
                } catch (SvmExit const& e) {
                    vmexit(e);
                }
            }
            if (k == 0)
                ++events;
        }
        done += k;
        c.icount += k;
        c.stats.instructions += k;
    }
}

void Cpu::request_stop() { m_core->stop_requested.store(true, std::memory_order_relaxed); }

void Cpu::inject_nmi() { m_core->nmi_pending = true; }

bool Cpu::nmi_deliverable() const { return m_core->nmi_pending && !m_core->nmi_blocked; }

CpuState Cpu::state() const { return m_core->get_full_state(); }

void Cpu::set_state(CpuState const& s) { m_core->put_full_state(s); }

Result<CpuState, std::string> Cpu::snapshot_state() const
{
    Core& c = *m_core;
    // The built-in hypervisor's guest is live only inside host_vmrun(), whose host context is a
    // fabrication of that call: between calls the CPU holds no guest mode, and a snapshot is
    // taken between calls.
    if (c.host_vmrun)
        return make_unexpected(std::string("the CPU is inside host_vmrun(): a snapshot is taken between calls"));
    // Only inside run() (an exception in the middle of an event's delivery); never between runs.
    if (c.delivering)
        return make_unexpected(std::string("the CPU is delivering an event"));
    // VMRUN loads CPL from the VMCB (APM vol 2 §15.5.1), which may disagree with SS.DPL until the
    // guest's next segment load; CpuState derives CPL from the segments, so such a state cannot
    // be carried exactly.
    bool pe = c.cr0 & cr0::PE;
    unsigned derived = !pe ? 0 : (c.flags & VM) ? 3 : c.seg[SS].dpl();
    if (c.cpl != derived)
        return make_unexpected("CPL " + std::to_string(c.cpl) + " differs from the " + std::to_string(derived) +
            " the segment registers give (a VMCB's CPL field); it cannot be carried");
    return c.get_full_state();
}

void Cpu::invalidate_code(Spa addr, uint64_t len)
{
    Core& c = *m_core;
    if (len == 0) return;
    for (uint64_t pfn = addr.pfn(); pfn <= (addr.value + len - 1) >> 12; ++pfn)
        if (c.is_code_page(pfn))
            c.invalidate_code_page(pfn);
    c.graveyard.clear();
}

void Cpu::flush_code_cache()
{
    Core& c = *m_core;
    std::vector<uint64_t> pages;
    for (auto const& [pfn, v] : c.code_pages)
        pages.push_back(pfn);
    for (uint64_t pfn : pages)
        c.invalidate_code_page(pfn);
    c.graveyard.clear();
}

uint64_t Cpu::rip() const { return m_core->rip; }
uint64_t Cpu::gpr(Gpr g) const { return m_core->r[g]; }
void Cpu::set_gpr(Gpr g, uint64_t v) { m_core->r[g] = v; }
bool Cpu::halted() const { return m_core->halted; }
uint64_t Cpu::tsc() const { return m_core->read_tsc(); }
void Cpu::set_tsc(uint64_t v) { m_core->tsc_offset = int64_t(v - m_core->icount); }
CpuModel Cpu::model() const { return m_core->model; }
CpuStats const& Cpu::stats() const { return m_core->stats; }

std::string Cpu::disassemble(uint64_t linear_address) const
{
    Core& c = *m_core;
    uint8_t buf[16] {};
    size_t have = 0;
    try {
        for (; have < 15; ++have)
            c.read_slow(linear_address + have, buf + have, 1, true);
    } catch (GuestFault const&) {
    }
    if (have == 0) return {};
    Insn i;
    if (!decode_one(buf, have, c.mode, i)) return "(truncated)";
    return disassemble_insn(i, linear_address);
}

} // namespace sevemu::cpu
