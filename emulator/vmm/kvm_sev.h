// sevemu — the KVM SEV interface's structures, as Linux's uapi defines them
// (include/uapi/linux/kvm.h; Documentation/virt/kvm/x86/amd-memory-encryption.rst). The layouts
// are checked against the system's <linux/kvm.h> in kvm_sev.cpp where that header has them.
// Addresses named *_uaddr and `data` are Hva: addresses in the hypervisor's direct map.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sevemu::vmm {

// enum sev_cmd_id
enum KvmSevCmdId : uint32_t {
    KVM_SEV_INIT = 0,
    KVM_SEV_ES_INIT = 1,
    KVM_SEV_LAUNCH_START = 2,
    KVM_SEV_LAUNCH_UPDATE_DATA = 3,
    KVM_SEV_LAUNCH_UPDATE_VMSA = 4,
    KVM_SEV_LAUNCH_SECRET = 5,
    KVM_SEV_LAUNCH_MEASURE = 6,
    KVM_SEV_LAUNCH_FINISH = 7,
    KVM_SEV_SEND_START = 8,
    KVM_SEV_SEND_UPDATE_DATA = 9,
    KVM_SEV_SEND_UPDATE_VMSA = 10,
    KVM_SEV_SEND_FINISH = 11,
    KVM_SEV_RECEIVE_START = 12,
    KVM_SEV_RECEIVE_UPDATE_DATA = 13,
    KVM_SEV_RECEIVE_UPDATE_VMSA = 14,
    KVM_SEV_RECEIVE_FINISH = 15,
    KVM_SEV_GUEST_STATUS = 16,
    KVM_SEV_DBG_DECRYPT = 17,
    KVM_SEV_DBG_ENCRYPT = 18,
    KVM_SEV_CERT_EXPORT = 19,
    KVM_SEV_GET_ATTESTATION_REPORT = 20,
    KVM_SEV_SEND_CANCEL = 21,
    KVM_SEV_INIT2 = 22,
};

// VM types (KVM_CREATE_VM's type argument on x86).
enum KvmVmType : uint32_t {
    KVM_X86_DEFAULT_VM = 0,
    KVM_X86_SW_PROTECTED_VM = 1,
    KVM_X86_SEV_VM = 2,
    KVM_X86_SEV_ES_VM = 3,
    KVM_X86_SNP_VM = 4,
};

// KVM_GET_DEVICE_ATTR on the VM: group KVM_X86_GRP_SEV, attribute KVM_X86_SEV_VMSA_FEATURES.
inline constexpr uint32_t KVM_X86_GRP_SEV = 1;
inline constexpr uint64_t KVM_X86_SEV_VMSA_FEATURES = 0;
// SEV_FEATURES bit 5 (VMSA 0x3B0): DebugSwap (Linux arch/x86/include/asm/svm.h SVM_SEV_FEAT_DEBUG_SWAP).
inline constexpr uint64_t SVM_SEV_FEAT_DEBUG_SWAP = 1ull << 5;

// The largest blob KVM copies from userspace (SEV_FW_BLOB_MAX_SIZE, include/linux/psp-sev.h).
inline constexpr uint32_t SEV_FW_BLOB_MAX_SIZE = 0x4000;

struct kvm_sev_cmd {
    uint32_t id;
    uint64_t data;
    uint32_t error;
    uint32_t sev_fd;
};
static_assert(sizeof(kvm_sev_cmd) == 24);

struct kvm_sev_init {
    uint64_t vmsa_features;
    uint32_t flags;
    uint16_t ghcb_version;
    uint16_t pad1;
    uint32_t pad2[8];
};
static_assert(sizeof(kvm_sev_init) == 48);

struct kvm_sev_launch_start {
    uint32_t handle;
    uint32_t policy;
    uint64_t dh_uaddr;
    uint32_t dh_len;
    uint64_t session_uaddr;
    uint32_t session_len;
};
static_assert(sizeof(kvm_sev_launch_start) == 40);

struct kvm_sev_launch_update_data {
    uint64_t uaddr;
    uint32_t len;
};
static_assert(sizeof(kvm_sev_launch_update_data) == 16);

struct kvm_sev_launch_secret {
    uint64_t hdr_uaddr;
    uint32_t hdr_len;
    uint64_t guest_uaddr;
    uint32_t guest_len;
    uint64_t trans_uaddr;
    uint32_t trans_len;
};
static_assert(sizeof(kvm_sev_launch_secret) == 48);

struct kvm_sev_launch_measure {
    uint64_t uaddr;
    uint32_t len;
};
static_assert(sizeof(kvm_sev_launch_measure) == 16);

struct kvm_sev_guest_status {
    uint32_t handle;
    uint32_t policy;
    uint32_t state;
};
static_assert(sizeof(kvm_sev_guest_status) == 12);

struct kvm_sev_dbg {
    uint64_t src_uaddr;
    uint64_t dst_uaddr;
    uint32_t len;
};
static_assert(sizeof(kvm_sev_dbg) == 24);

struct kvm_sev_attestation_report {
    uint8_t mnonce[16];
    uint64_t uaddr;
    uint32_t len;
};
static_assert(sizeof(kvm_sev_attestation_report) == 32);

// Migration (include/uapi/linux/kvm.h, Linux 5.11+). A zero session_len / hdr_len / trans_len asks
// the firmware for the length it needs (arch/x86/kvm/svm/sev.c sev_send_start,
// sev_send_update_data).
struct kvm_sev_send_start {
    uint32_t policy;
    uint64_t pdh_cert_uaddr;
    uint32_t pdh_cert_len;
    uint64_t plat_certs_uaddr;
    uint32_t plat_certs_len;
    uint64_t amd_certs_uaddr;
    uint32_t amd_certs_len;
    uint64_t session_uaddr;
    uint32_t session_len;
};
static_assert(sizeof(kvm_sev_send_start) == 72);
static_assert(offsetof(kvm_sev_send_start, pdh_cert_uaddr) == 8);
static_assert(offsetof(kvm_sev_send_start, session_len) == 64);

struct kvm_sev_send_update_data {
    uint64_t hdr_uaddr;
    uint32_t hdr_len;
    uint64_t guest_uaddr;
    uint32_t guest_len;
    uint64_t trans_uaddr;
    uint32_t trans_len;
};
static_assert(sizeof(kvm_sev_send_update_data) == 48);

struct kvm_sev_receive_start {
    uint32_t handle;
    uint32_t policy;
    uint64_t pdh_uaddr;
    uint32_t pdh_len;
    uint64_t session_uaddr;
    uint32_t session_len;
};
static_assert(sizeof(kvm_sev_receive_start) == 40);

struct kvm_sev_receive_update_data {
    uint64_t hdr_uaddr;
    uint32_t hdr_len;
    uint64_t guest_uaddr;
    uint32_t guest_len;
    uint64_t trans_uaddr;
    uint32_t trans_len;
};
static_assert(sizeof(kvm_sev_receive_update_data) == 48);

// KVM_SEV_SEND_UPDATE_VMSA / KVM_SEV_RECEIVE_UPDATE_VMSA: upstream's uapi names the ids but
// sev_mem_enc_ioctl has no handler. The out-of-tree SEV-ES (Hygon CSV2) migration series handles
// them per vCPU: the vCPU's id and the header and packet buffers of SEND/RECEIVE_UPDATE_DATA; the
// guest buffer is the vCPU's VMSA page, which only KVM knows (QUIRKS.md). A zero hdr_len or
// trans_len asks for the lengths as with SEND_UPDATE_DATA.
struct kvm_sev_send_update_vmsa {
    uint32_t vcpu_id;
    uint64_t hdr_uaddr;
    uint32_t hdr_len;
    uint64_t trans_uaddr;
    uint32_t trans_len;
};
static_assert(sizeof(kvm_sev_send_update_vmsa) == 40);
using kvm_sev_receive_update_vmsa = kvm_sev_send_update_vmsa;

// The guest's side of live migration (Linux arch/x86/include/uapi/asm/kvm_para.h, merged in
// 5.16 from the SEV live-migration series): the guest learns from CPUID 0x40000001 EAX bit
// KVM_FEATURE_MIGRATION_CONTROL that it may tell the hypervisor, by writing KVM_MIGRATION_READY
// to MSR_KVM_MIGRATION_CONTROL, that its shared pages are all reported (KVM_HC_MAP_GPA_RANGE)
// and it can be migrated.
inline constexpr uint32_t KVM_FEATURE_MIGRATION_CONTROL = 17;
inline constexpr uint32_t MSR_KVM_MIGRATION_CONTROL = 0x4b564d08;
inline constexpr uint64_t KVM_MIGRATION_READY = 1ull << 0;
// KVM_HC_MAP_GPA_RANGE's attributes: bits 3:0 the page size, bit 4 the encryption status.
inline constexpr uint64_t KVM_MAP_GPA_RANGE_PAGE_SZ_4K = 0;
inline constexpr uint64_t KVM_MAP_GPA_RANGE_PAGE_SZ_2M = 1;
inline constexpr uint64_t KVM_MAP_GPA_RANGE_PAGE_SZ_1G = 2;
inline constexpr uint64_t KVM_MAP_GPA_RANGE_ENCRYPTED = 1ull << 4;
// Hypercall return values (include/uapi/linux/kvm_para.h: KVM_ENOSYS 1000, KVM_EINVAL = EINVAL).
inline constexpr uint64_t KVM_ENOSYS = 1000;
inline constexpr uint64_t KVM_EINVAL = 22;

// KVM_GET_SHARED_PAGES_LIST / KVM_SET_SHARED_PAGES_LIST (the SEV live-migration series v10,
// "KVM: x86: Introduce KVM_GET_SHARED_PAGES_LIST ioctl"): the pages the guest made shared, as
// sorted, non-overlapping, merged runs of guest frame numbers. sevemu's entry is the run's first
// gfn and its length in pages.
struct kvm_shared_region {
    uint64_t gfn_start;
    uint64_t npages;
};
static_assert(sizeof(kvm_shared_region) == 16);

struct kvm_shared_pages_list {
    uint64_t pnents;  // Hva of a uint32_t: the number of entries (GET writes it, SET reads it)
    uint64_t buffer;  // Hva of the entries
    uint32_t size;    // the buffer's size in bytes
};
static_assert(sizeof(kvm_shared_pages_list) == 24);

struct kvm_enc_region {
    uint64_t addr;
    uint64_t size;
};
static_assert(sizeof(kvm_enc_region) == 16);

struct kvm_userspace_memory_region {
    uint32_t slot;
    uint32_t flags;
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
};
static_assert(sizeof(kvm_userspace_memory_region) == 32);

} // namespace sevemu::vmm
