// sevemu — the SEV path of live migration: the RamPageEncoder and RamPageDecoder (migration.h)
// of a machine with an SEV guest, as QEMU's out-of-tree SEV migration series drives the KVM SEV
// commands (target/i386/sev.c sev_save_setup, sev_save_outgoing_page, sev_load_incoming_page).
//
// What the stream carries for an SEV guest (README "The live-migration stream", version 2):
//   "sev-session" [1]        right after "machine" and "ram": u32 the guest's policy, bytes the
//                            source platform's PDH, bytes SEND_START's session (the transport keys
//                            wrapped for the target's PDH); the target does RECEIVE_START with them
//   "ram-pages" records      only pages of guest RAM (the hypervisor's own pages below it, VMCBs,
//                            nested page tables, PSP buffers, never leave the source):
//                              kind 1  a page of the guest's shared-regions list, in the clear
//                              kind 2  a private page: u32 length, then u32 header length H, the
//                                      SEND_UPDATE_DATA packet header (H bytes), and the page
//                                      re-encrypted under the transport keys (4096 bytes); the
//                                      target's RECEIVE_UPDATE_DATA checks its MAC
//   "sev-shared-regions" [1] at the stop: u32 count N, N × (u64 first gfn, u64 pages)
//   "sev-vcpu0".. [1]        at the stop, one per vCPU: the VMCB save area (0x2E8 bytes; not
//                            encrypted for plain SEV), u32 EVENTINJ, u32 EVENTINJ error, u32
//                            interrupt state, u32 int_ctl, 16 × u64 GPRs (RAX and RSP unused),
//                            u64 IA32_APIC_BASE, bool interrupt window asked; from version 2:
//                            u64 the GHCB MSR (VMCB 0x0A0), bool state protected, bool first
//                            SIPI received, u8 AP reset hold (0 none, 1 NAE event, 2 MSR
//                            protocol), bool NMIs masked, bool VMSA packet present, and if so
//                            u32 header length H, the SEND_UPDATE_VMSA packet header (H bytes)
//                            and the VMSA page re-encrypted under the transport keys (4096
//                            bytes). SEV-ES: the save area and GPRs are zeros (the registers are
//                            only in the VMSA packet) and every vCPU must carry a VMSA packet,
//                            which the target's RECEIVE_UPDATE_VMSA checks (MAC) before
//                            RECEIVE_FINISH; a plain SEV guest's vCPU carries none.
// Version 2 (SEV-ES migration) writes every SEV section with version 2; a version-1 stream
// (no ES fields) is still read for a plain SEV guest.
// The machine's "amd-sp" section is empty (the target's AMD-SP is its own: the guest's keys
// travel only inside the session) and its "ram" layout section is not applied on the target.
//
// The source's firmware context is SUPDATE from SEND_START until the target confirms; a
// cancel, a failure or a refusal then issues SEND_CANCEL and the guest runs on (and can migrate
// again). Only once the target answered OK does the source issue SEND_FINISH: its guest is then
// SENT and never runs again (QMP cont says so).
#include "base/state_stream.h"
#include "emulator/machine.h"
#include "emulator/migration.h"
#include "emulator/sev_runtime.h"
#include "emulator/vmm/vcpu.h"
#include "emulator/vmm/vm.h"
#include "mmu/memory_controller.h"

#include <cstring>
#include <fmt/format.h>

namespace sevemu::emulator {

namespace {

constexpr uint8_t kPageClear = 1, kPagePacket = 2;
constexpr uint32_t kSevSectionVersion = 2;
constexpr uint32_t kSevSectionVersionNoEs = 1;
constexpr char kSessionSection[] = "sev-session";
constexpr char kSharedSection[] = "sev-shared-regions";
constexpr char kVcpuPrefix[] = "sev-vcpu";
constexpr uint32_t kMaxSharedRegions = 1u << 20;

Unexpected<std::string> err(std::string s) { return Unexpected<std::string>(std::move(s)); }

std::string sev_text(SevError const& e) { return e.message; }

class SevRamEncoder final : public RamPageEncoder {
public:
    Result<void, std::string> begin(Machine& m, SnapshotWriter& out) override
    {
        auto* sev = m.sev();
        if (!sev)
            return err("internal: the SEV encoder on a machine without an SEV guest");
        auto pdh = sev->platform_pdh();
        if (!pdh)
            return err(sev_text(pdh.error()));
        auto session = sev->send_start();
        if (!session)
            return err(sev_text(session.error()));
        m_started = true;
        StateWriter w;
        w.u32(sev->policy());
        w.bytes(*pdh);
        w.bytes(*session);
        out.add(kSessionSection, kSevSectionVersion, w.data());
        return {};
    }

    bool wants(Machine& m, uint64_t spa) const override
    {
        return spa >= SevRuntime::kGuestRamBase && spa - SevRuntime::kGuestRamBase < m.sev()->guest_ram_size();
    }

    Result<uint8_t, std::string> encode_page(Machine& m, uint64_t spa, StateWriter& w) override
    {
        auto* sev = m.sev();
        uint64_t gpa = spa - SevRuntime::kGuestRamBase;
        if (sev->vm().is_shared(gpa >> kPageShift)) {
            // A page the guest shared (KVM_HC_MAP_GPA_RANGE): plaintext in DRAM, sent as is.
            if (!m.memory().copy_dram_page(spa >> kPageShift, m_page))
                return err(fmt::format("page {:#x} is not DRAM", spa));
            w.u8(kPageClear);
            w.raw(m_page);
            return kPageClear;
        }
        // Every private page goes through the firmware, even one DRAM holds as zeros: the guest
        // reads such a page as the zeros' decryption under its key, which only RECEIVE_UPDATE_DATA
        // reproduces on the target (zeros in the target's DRAM would decrypt to other bytes).
        auto hdr_len = sev->packet_header_length();
        if (!hdr_len)
            return err(sev_text(hdr_len.error()));
        w.u8(kPagePacket);
        w.u32(uint32_t(4 + *hdr_len + kPageSize));
        w.u32(*hdr_len);
        // The packet goes straight into the record.
        auto& bytes = w.data();
        size_t at = bytes.size();
        bytes.resize(at + *hdr_len + kPageSize);
        auto out = std::span<uint8_t>(bytes).subspan(at);
        if (auto s = sev->send_page(gpa, out.first(*hdr_len), out.subspan(*hdr_len)); !s) {
            bytes.resize(at);
            return err(sev_text(s.error()));
        }
        return kPagePacket;
    }

    Result<void, std::string> finish(Machine& m, SnapshotWriter& out) override
    {
        auto* sev = m.sev();
        {
            StateWriter w;
            auto const& regions = sev->vm().shared_regions();
            w.u32(uint32_t(regions.size()));
            for (auto const& r : regions) {
                w.u64(r.gfn_start);
                w.u64(r.npages);
            }
            out.add(kSharedSection, kSevSectionVersion, w.data());
        }
        for (size_t i = 0; i < sev->vcpu_count(); ++i) {
            auto st = sev->vcpu(i).migration_state();
            StateWriter w;
            w.raw({ reinterpret_cast<uint8_t const*>(&st.save), sizeof st.save });
            w.u32(st.event_inj);
            w.u32(st.event_inj_err);
            w.u32(st.int_state);
            w.u32(st.int_ctl);
            for (uint64_t g : st.gprs)
                w.u64(g);
            w.u64(st.apic_base);
            w.boolean(st.irq_window);
            w.u64(st.ghcb_msr);
            w.boolean(st.guest_state_protected);
            w.boolean(st.received_first_sipi);
            w.u8(st.ap_reset_hold);
            w.boolean(st.nmi_masked);
            w.boolean(sev->sev_es());
            if (sev->sev_es()) {
                // SEND_UPDATE_VMSA, now that the vCPUs stopped: the packet straight into the record.
                auto hdr_len = sev->packet_header_length();
                if (!hdr_len)
                    return err(sev_text(hdr_len.error()));
                w.u32(*hdr_len);
                auto& bytes = w.data();
                size_t at = bytes.size();
                bytes.resize(at + *hdr_len + kPageSize);
                auto pkt = std::span<uint8_t>(bytes).subspan(at);
                if (auto s = sev->send_vmsa(i, pkt.first(*hdr_len), pkt.subspan(*hdr_len)); !s)
                    return err(sev_text(s.error()));
            }
            out.add(fmt::format("{}{}", kVcpuPrefix, i), kSevSectionVersion, w.data());
        }
        return {};
    }

    void complete(Machine& m) override
    {
        // The target has the guest: SEND_FINISH, and this one is SENT for good.
        if (auto r = m.sev()->send_finish(); !r)
            m.trace().emit("sev", r.error().message);
    }

    void abort(Machine& m) override
    {
        if (!m_started)
            return;
        if (auto r = m.sev()->send_cancel(); !r)
            m.trace().emit("sev", r.error().message);
    }

private:
    bool m_started {};
    std::array<uint8_t, kPageSize> m_page {};
};

class SevRamDecoder final : public RamPageDecoder {
public:
    bool claims(std::string_view section) const override
    {
        return section == kSessionSection || section == kSharedSection || section.starts_with(kVcpuPrefix);
    }

    Result<void, std::string> session_section(Machine& m, std::string_view name, uint32_t version,
        std::span<uint8_t const> payload) override
    {
        auto* sev = m.sev();
        if (version != kSevSectionVersion && version != kSevSectionVersionNoEs)
            return err(fmt::format("unsupported version {} (this build reads versions {} and {})", version,
                kSevSectionVersionNoEs, kSevSectionVersion));
        StateReader r(name, payload);
        if (name == kSessionSection) {
            if (m_session)
                return err("a second SEV session");
            uint32_t policy = r.u32();
            auto pdh = r.bytes(vmm::SEV_FW_BLOB_MAX_SIZE);
            auto session = r.bytes(vmm::SEV_FW_BLOB_MAX_SIZE);
            if (auto ok = r.finish(); !ok)
                return err(ok.error().message);
            if (auto s = sev->receive_start(policy, pdh, session); !s)
                return err(s.error().message);
            m_session = true;
            return {};
        }
        if (!m_session)
            return err("before the SEV session");
        if (name == kSharedSection) {
            uint32_t count = r.u32();
            if (r.ok() && count > kMaxSharedRegions)
                r.fail(fmt::format("{} shared regions (at most {})", count, kMaxSharedRegions));
            std::vector<vmm::kvm_shared_region> regions;
            for (uint32_t i = 0; r.ok() && i < count; ++i) {
                uint64_t gfn = r.u64(), n = r.u64();
                regions.push_back({ gfn, n });
            }
            if (auto ok = r.finish(); !ok)
                return err(ok.error().message);
            if (auto s = sev->set_shared_regions(regions); !s)
                return err(s.error().message);
            return {};
        }
        // "sev-vcpuN"
        std::string_view index_text = name.substr(std::strlen(kVcpuPrefix));
        size_t index = 0;
        // Decimal without leading zeros, as the source writes it: "sev-vcpu00" would be a second
        // name for vCPU 0, whose state would then arrive twice.
        if (index_text.empty() || index_text.size() > 3 || (index_text.size() > 1 && index_text[0] == '0'))
            return err("not a vCPU of this machine");
        for (char ch : index_text) {
            if (ch < '0' || ch > '9')
                return err("not a vCPU of this machine");
            index = index * 10 + size_t(ch - '0');
        }
        if (index >= sev->vcpu_count())
            return err(fmt::format("vCPU {} (this machine has {})", index, sev->vcpu_count()));
        vmm::Vcpu::MigrationState st {};
        auto save = r.raw(sizeof st.save);
        st.event_inj = r.u32();
        st.event_inj_err = r.u32();
        st.int_state = r.u32();
        st.int_ctl = r.u32();
        for (auto& g : st.gprs)
            g = r.u64();
        st.apic_base = r.u64();
        st.irq_window = r.boolean();
        bool has_vmsa = false;
        std::span<uint8_t const> vmsa_hdr, vmsa_page;
        if (version >= kSevSectionVersion) {
            st.ghcb_msr = r.u64();
            st.guest_state_protected = r.boolean();
            st.received_first_sipi = r.boolean();
            st.ap_reset_hold = r.u8();
            st.nmi_masked = r.boolean();
            has_vmsa = r.boolean();
            if (r.ok() && st.ap_reset_hold > 2)
                r.fail(fmt::format("AP reset hold state {}", st.ap_reset_hold));
            if (has_vmsa) {
                uint32_t hdr_len = r.u32();
                if (r.ok() && (hdr_len == 0 || hdr_len > 0x100))
                    r.fail(fmt::format("a VMSA packet header of {} bytes", hdr_len));
                vmsa_hdr = r.raw(hdr_len);
                vmsa_page = r.raw(kPageSize);
            }
        }
        if (auto ok = r.finish(); !ok)
            return err(ok.error().message);
        // An SEV-ES vCPU's registers exist only in its VMSA: it must come, protected, and only
        // for an SEV-ES guest.
        if (sev->sev_es() && (!has_vmsa || !st.guest_state_protected))
            return err(fmt::format("vCPU {} of an SEV-ES guest without its VMSA", index));
        if (!sev->sev_es() && (has_vmsa || st.guest_state_protected))
            return err(fmt::format("vCPU {} carries SEV-ES state, but this sev-guest is not SEV-ES", index));
        if (m_vcpus_loaded.size() == sev->vcpu_count() && m_vcpus_loaded[index])
            return err(fmt::format("a second state for vCPU {}", index));
        if (has_vmsa) {
            if (auto s = sev->receive_vmsa(index, vmsa_hdr, vmsa_page); !s)
                return err(s.error().message);
        }
        std::memcpy(&st.save, save.data(), sizeof st.save);
        sev->vcpu(index).set_migration_state(st);
        m_vcpus_loaded.resize(sev->vcpu_count());
        m_vcpus_loaded[index] = true;
        return {};
    }

    Result<void, std::string> decode_page(Machine& m, uint64_t spa, uint8_t kind, std::span<uint8_t const> data) override
    {
        auto* sev = m.sev();
        if (kind != kPagePacket)
            return err(fmt::format("record kind {} is not an SEV page packet", kind));
        if (!m_session)
            return err("an encrypted page before the SEV session");
        if (spa < SevRuntime::kGuestRamBase)
            return err("not a page of guest RAM");
        StateReader r(kRamPagesSection, data);
        uint32_t hdr_len = r.u32();
        if (r.ok() && (hdr_len == 0 || hdr_len > 0x100))
            r.fail(fmt::format("a packet header of {} bytes", hdr_len));
        auto hdr = r.raw(hdr_len);
        auto page = r.raw(kPageSize);
        if (auto ok = r.finish(); !ok)
            return err(ok.error().message);
        if (auto s = sev->receive_page(spa - SevRuntime::kGuestRamBase, hdr, page); !s)
            return err(s.error().message);
        return {};
    }

    Result<void, std::string> finish(Machine& m) override
    {
        if (!m_session)
            return err("the stream carried no SEV session (was the source an SEV guest?)");
        auto* sev = m.sev();
        if (m_vcpus_loaded.size() != sev->vcpu_count()
            || std::find(m_vcpus_loaded.begin(), m_vcpus_loaded.end(), false) != m_vcpus_loaded.end())
            return err("the stream did not carry every vCPU's SEV state");
        if (auto s = sev->receive_finish(); !s)
            return err(s.error().message);
        return {};
    }

private:
    bool m_session {};
    std::vector<bool> m_vcpus_loaded;
};

} // namespace

std::unique_ptr<RamPageEncoder> make_sev_ram_page_encoder() { return std::make_unique<SevRamEncoder>(); }
std::unique_ptr<RamPageDecoder> make_sev_ram_page_decoder() { return std::make_unique<SevRamDecoder>(); }

} // namespace sevemu::emulator
