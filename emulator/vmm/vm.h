// sevemu — the hypervisor layer's VM object, with the semantics of Linux KVM's SEV interface
// (arch/x86/kvm/svm/sev.c; Documentation/virt/kvm/x86/amd-memory-encryption.rst).
//
// SevHost is what the kvm_amd module holds once per host: the PSP driver, the SEV and SEV-ES
// ASID ranges and their bitmaps, the VMSA features it supports. Vm is one KVM VM: its type,
// memory slots and SEV context. Every call returns 0 or a negative errno exactly where KVM
// would, and firmware failures also leave the firmware's status in kvm_sev_cmd::error.
// Vcpus (VMRUN on a VMCB) come with SVM in the CPU; Vm counts created vCPUs for KVM's checks.
#pragma once

#include "emulator/vmm/kvm_sev.h"
#include "emulator/vmm/psp_driver.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

namespace sevemu::vmm {

class NestedPageTables; // vcpu.h
class Vcpu;             // vcpu.h

struct SevHostConfig {
    uint32_t max_asid { 509 };     // CPUID 8000_001F ECX
    uint32_t min_sev_asid { 100 }; // CPUID 8000_001F EDX; ASIDs below are SEV-ES
    bool es_supported { true };
    bool sme_coherent { true };    // CPUID 8000_001F EAX[10]: no CLFLUSH needed around launches
    uint64_t supported_vmsa_features { SVM_SEV_FEAT_DEBUG_SWAP };
    uint8_t sev_enc_bit { 51 };    // CPUID 8000_001F EBX[5:0] (KVM's sev_enc_bit), told to SEV-ES
                                   // guests in the GHCB MSR protocol's SEV_INFO response
};

class SevHost {
public:
    SevHost(PspDriver&, mmu::MemoryController&, SevHostConfig);

    PspDriver& psp() { return m_psp; }
    mmu::MemoryController& memory() { return m_mc; }
    SevHostConfig const& config() const { return m_config; }

    // sev_asid_new(): -EBUSY when the range is exhausted even after recycling, -ENOTTY when the
    // range is empty.
    Result<uint32_t, int> asid_new(bool es);
    // sev_asid_free(): the ASID goes to the reclaim set; it is reused only after WBINVD + DF_FLUSH.
    void asid_free(uint32_t asid);
    bool asid_in_use(uint32_t asid) const { return asid < m_used.size() && m_used[asid]; }

private:
    bool recycle_asids(uint32_t min, uint32_t max);

    PspDriver& m_psp;
    mmu::MemoryController& m_mc;
    SevHostConfig m_config;
    std::vector<bool> m_used;    // sev_asid_bitmap
    std::vector<bool> m_reclaim; // sev_reclaim_asid_bitmap
};

class Vm {
public:
    Vm(SevHost&, KvmVmType type);
    ~Vm();
    Vm(Vm const&) = delete;
    Vm& operator=(Vm const&) = delete;

    KvmVmType type() const { return m_type; }

    // KVM_SET_USER_MEMORY_REGION (slot add, change, or delete with memory_size 0).
    int set_user_memory_region(kvm_userspace_memory_region const&);
    // Guest-physical to system-physical through the memory slots (the hypervisor's view).
    std::optional<Spa> gpa_to_spa(Gpa gpa) const;
    std::map<uint32_t, kvm_userspace_memory_region> const& memory_slots() const { return m_slots; }
    SevHost& host() { return m_host; }

    // KVM_MEMORY_ENCRYPT_OP: cmd.data is the Hva of the per-command structure.
    int memory_encrypt_op(kvm_sev_cmd& cmd);
    int memory_encrypt_reg_region(kvm_enc_region const&);
    int memory_encrypt_unreg_region(kvm_enc_region const&);
    // KVM_GET_DEVICE_ATTR (KVM_X86_GRP_SEV / KVM_X86_SEV_VMSA_FEATURES).
    int get_device_attr(uint32_t group, uint64_t attr, uint64_t& value) const;

    // vCPU creation bookkeeping (KVM refuses SEV init after the first vCPU).
    void note_vcpu_created() { ++m_created_vcpus; }
    // The VM's live vCPUs (kvm_for_each_vcpu), registered by Vcpu::create and removed by its
    // destructor: KVM_SEV_LAUNCH_UPDATE_VMSA encrypts the VMSA of each, in creation order.
    void register_vcpu(Vcpu* v) { m_vcpus.push_back(v); }
    void unregister_vcpu(Vcpu* v) { std::erase(m_vcpus, v); }
    std::vector<Vcpu*> const& vcpus() const { return m_vcpus; }
    // The SEV-ES AP jump table (sev->ap_jump_table), set and read by the guest through the
    // AP_JUMP_TABLE NAE event (0x8000_0005); the VMM reads it to start APs.
    uint64_t ap_jump_table() const { return m_ap_jump_table; }
    void set_ap_jump_table(uint64_t gpa) { m_ap_jump_table = gpa; }
    // The nested page tables the VM's vCPUs share while any of them lives (vcpu.h; KVM's TDP MMU
    // gives the vCPUs of a VM one root).
    std::weak_ptr<NestedPageTables>& shared_nested_page_tables() { return m_npt; }

    // --- The guest's live-migration ABI (kvm_sev.h; emulator/vmm/vm_shared_regions.cpp).
    // MSR_KVM_MIGRATION_CONTROL, one per VM as in the series (sev->live_migration_enabled):
    // the vCPU's WRMSR stores it, the VMM reads it before it migrates an SEV guest.
    uint64_t migration_control() const { return m_migration_control; }
    void set_migration_control(uint64_t value) { m_migration_control = value; }
    // The effect of a validated KVM_HC_MAP_GPA_RANGE: gfns [gfn, gfn + npages) become private
    // (encrypted) or shared; the list stays sorted and merged.
    void map_gpa_range(uint64_t gfn, uint64_t npages, bool encrypted);
    std::vector<kvm_shared_region> const& shared_regions() const { return m_shared; }
    bool is_shared(uint64_t gfn) const;
    // KVM_GET_SHARED_PAGES_LIST: -EINVAL for a zero size, -E2BIG (with *pnents = the count)
    // when the buffer is too small, -EFAULT for bad addresses.
    int get_shared_pages_list(kvm_shared_pages_list const&) const;
    // KVM_SET_SHARED_PAGES_LIST (the target, before it runs): replaces the list with the given
    // entries, sorted and merged; -EINVAL for an empty run, a run that wraps, or a size that
    // does not hold the entries; the list is unchanged on any error.
    int set_shared_pages_list(kvm_shared_pages_list const&);

    // The SEV context as KVM keeps it (struct kvm_sev_info).
    struct SevInfo {
        bool active {}, es_active {}, need_init {};
        uint32_t asid {}, handle {}, policy {};
        uint64_t vmsa_features {};
        uint16_t ghcb_version {};
    };
    SevInfo const& sev() const { return m_sev; }

private:
    using Pages = std::vector<Spa>;
    Result<Pages, int> pin(uint64_t uaddr, uint64_t len);
    Result<Spa, int> copy_user_blob(uint64_t uaddr, uint32_t len); // psp_copy_user_blob
    void free_blob(Spa blob, uint32_t len);
    // A user blob copied into kernel memory (psp_copy_user_blob), freed when it goes out of scope,
    // so that every early return of an operation frees what it copied.
    struct UserBlob {
        explicit UserBlob(Vm& vm) : vm(vm) {}
        ~UserBlob()
        {
            if (spa)
                vm.free_blob(*spa, len);
        }
        UserBlob(UserBlob const&) = delete;
        UserBlob& operator=(UserBlob const&) = delete;
        Vm& vm;
        std::optional<Spa> spa;
        uint32_t len {};
    };
    int copy_user_blob(UserBlob&, uint64_t uaddr, uint32_t len); // 0 or -errno
    void clflush(Pages const&);
    int issue(firmware::CommandId, void* buf, uint32_t& error);
    // The command's parameter struct in from / out to the VMM's memory at kvm_sev_cmd.data (the
    // kernel's copy_from_user / copy_to_user of `argp->data`); false: the address is bad (-EFAULT).
    template <class T> bool params_in(kvm_sev_cmd const& cmd, T& params)
    {
        return bool(m_host.psp().host().copy_from(Hva(cmd.data), { reinterpret_cast<uint8_t*>(&params), sizeof params }));
    }
    template <class T> bool params_out(kvm_sev_cmd const& cmd, T const& params)
    {
        return bool(m_host.psp().host().copy_to(Hva(cmd.data), { reinterpret_cast<uint8_t const*>(&params), sizeof params }));
    }

    int guest_init(kvm_sev_cmd&, kvm_sev_init data, KvmVmType vm_type);
    int sev_init(kvm_sev_cmd&);
    int sev_init2(kvm_sev_cmd&);
    int launch_start(kvm_sev_cmd&);
    int launch_update_data(kvm_sev_cmd&);
    int launch_update_vmsa(kvm_sev_cmd&);
    template <class Params, class Buf, class SetBlob, class GetLen>
    int blob_out_command(kvm_sev_cmd&, firmware::CommandId, Buf& data, SetBlob, GetLen);
    int launch_measure(kvm_sev_cmd&);
    int launch_secret(kvm_sev_cmd&);
    int launch_finish(kvm_sev_cmd&);
    int guest_status(kvm_sev_cmd&);
    int dbg_crypt(kvm_sev_cmd&, bool decrypt);
    int dbg_decrypt_user(Spa src, uint64_t dst_uaddr, Spa dst, uint32_t size, uint32_t& error);
    int dbg_encrypt_user(Spa src, uint64_t src_uaddr, Spa dst, uint64_t dst_uaddr, uint32_t size, uint32_t& error);
    int get_attestation_report(kvm_sev_cmd&);
    void unbind_asid();
    template <class Params>
    int adopt_context(kvm_sev_cmd&, uint32_t handle, Params&);

    // Live migration, KVM_SEV_SEND_* / KVM_SEV_RECEIVE_* (emulator/vmm/vm_migration.cpp).
    int send_start(kvm_sev_cmd&);
    int send_start_query_session_length(kvm_sev_cmd&, kvm_sev_send_start&);
    int send_update_data(kvm_sev_cmd&);
    template <class Params>
    int send_query_lengths(kvm_sev_cmd&, firmware::CommandId, Params&);
    int send_update_vmsa(kvm_sev_cmd&);
    int receive_update_vmsa(kvm_sev_cmd&);
    Vcpu* find_vcpu(uint32_t id) const;
    int send_finish(kvm_sev_cmd&);
    int send_cancel(kvm_sev_cmd&);
    int receive_start(kvm_sev_cmd&);
    int receive_update_data(kvm_sev_cmd&);
    int receive_finish(kvm_sev_cmd&);

    SevHost& m_host;
    KvmVmType m_type;
    uint32_t m_created_vcpus {};
    std::weak_ptr<NestedPageTables> m_npt;
    std::map<uint32_t, kvm_userspace_memory_region> m_slots;
    std::vector<kvm_enc_region> m_enc_regions;
    SevInfo m_sev;
    uint64_t m_migration_control {};
    std::vector<kvm_shared_region> m_shared;
    std::vector<Vcpu*> m_vcpus;
    uint64_t m_ap_jump_table {};
};

} // namespace sevemu::vmm
