// The hypervisor layer as a VMM developer drives it: KVM_MEMORY_ENCRYPT_OP with the kernel's
// structures in host memory, through the PSP driver and the mailbox to the firmware. The far
// end of the launch is the guest owner's library; the launch digest is recomputed with OpenSSL.
#include "tests/emulator/vmm/vmm_harness.h"
#include "tools/sevemu-owner/owner.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <openssl/sha.h>
#include <unistd.h>

using namespace sevemu;
using namespace sevemu::vmm;
namespace fw = sevemu::firmware;

using namespace sevemu::test;


TEST_CASE("a whole SEV launch through the KVM layer, verified by the guest owner", "[vmm]")
{
    Host h;
    Vm vm(*h.sev, KVM_X86_DEFAULT_VM);
    REQUIRE(op(vm, KVM_SEV_INIT, Hva(0)) == 0);
    uint32_t asid = vm.sev().asid;
    CHECK(asid >= h.sev->config().min_sev_asid);

    // Guest RAM: 4 pages of host DRAM in a memory slot at GPA 0.
    auto ram = h.host->alloc_pages(4);
    REQUIRE(ram.has_value());
    kvm_userspace_memory_region region { 0, 0, 0, 4 * kPageSize, direct_map(*ram).value };
    REQUIRE(vm.set_user_memory_region(region) == 0);
    CHECK(vm.gpa_to_spa(Gpa(0x1234)) == *ram + 0x1234);

    // The owner's session for this platform's PDH; policy 0 allows debugging.
    uint32_t policy = 0;
    auto session = owner::make_session(h.export_pdh(), policy);
    REQUIRE(session.has_value());
    Hva dh = h.user_buffer(session->godh_cert), blob = h.user_buffer(session->session_blob);
    kvm_sev_launch_start start {};
    start.policy = policy;
    start.dh_uaddr = dh.value;
    start.dh_len = uint32_t(session->godh_cert.size());
    start.session_uaddr = blob.value;
    start.session_len = uint32_t(session->session_blob.size());
    Hva start_at = h.user_struct(start);
    uint32_t error = 0;
    REQUIRE(op(vm, KVM_SEV_LAUNCH_START, start_at, &error) == 0);
    uint32_t handle = h.read_struct<kvm_sev_launch_start>(start_at).handle;
    CHECK(handle != 0);
    CHECK(vm.sev().handle == handle);
    CHECK(h.mc->slot_programmed(asid));

    // The image: 2.5 pages written by the VMM in plaintext, then encrypted in place.
    Bytes image = pattern(2 * kPageSize + 0x800, 3);
    REQUIRE(h.host->copy_to(direct_map(*ram), image).has_value());
    kvm_sev_launch_update_data upd { direct_map(*ram).value, uint32_t(image.size()) };
    REQUIRE(op(vm, KVM_SEV_LAUNCH_UPDATE_DATA, h.user_struct(upd), &error) == 0);

    // LAUNCH_MEASURE: first the length query, as QEMU does it.
    kvm_sev_launch_measure query {};
    Hva query_at = h.user_struct(query);
    CHECK(op(vm, KVM_SEV_LAUNCH_MEASURE, query_at, &error) == -EIO);
    CHECK(error == uint32_t(fw::Status::INVALID_LEN));
    uint32_t mlen = h.read_struct<kvm_sev_launch_measure>(query_at).len;
    REQUIRE(mlen == 48);
    Hva mbuf = h.user_buffer({}, mlen);
    kvm_sev_launch_measure measure { mbuf.value, mlen };
    REQUIRE(op(vm, KVM_SEV_LAUNCH_MEASURE, h.user_struct(measure), &error) == 0);
    Bytes measurement = h.read_user(mbuf, mlen);

    // The owner checks it against the digest of the image, computed here with OpenSSL.
    owner::Sha256Digest digest {};
    SHA256(image.data(), image.size(), digest.data());
    auto status = h.psp->platform_status();
    REQUIRE(status.has_value());
    owner::PlatformVersion version { status->api_major, status->api_minor, status->build };
    REQUIRE(owner::verify_measurement(session->keys.tik, measurement, version, policy, digest).has_value());

    // The secret, injected at GPA 0x2400 (inside the measured image's last page).
    Bytes secret_text = pattern(64, 0x5a);
    auto packet = owner::build_secret(session->keys.tek, session->keys.tik, measurement, secret_text);
    REQUIRE(packet.has_value());
    Hva hdr = h.user_buffer(packet->header), trans = h.user_buffer(packet->ciphertext);
    kvm_sev_launch_secret secret {};
    secret.hdr_uaddr = hdr.value;
    secret.hdr_len = uint32_t(packet->header.size());
    secret.guest_uaddr = direct_map(*ram).value + 0x2400;
    secret.guest_len = uint32_t(packet->ciphertext.size());
    secret.trans_uaddr = trans.value;
    secret.trans_len = uint32_t(packet->ciphertext.size());
    REQUIRE(op(vm, KVM_SEV_LAUNCH_SECRET, h.user_struct(secret), &error) == 0);
    REQUIRE(op(vm, KVM_SEV_LAUNCH_FINISH, Hva(0), &error) == 0);

    kvm_sev_guest_status gs {};
    Hva gs_at = h.user_struct(gs);
    REQUIRE(op(vm, KVM_SEV_GUEST_STATUS, gs_at, &error) == 0);
    auto got = h.read_struct<kvm_sev_guest_status>(gs_at);
    CHECK(got.handle == handle);
    CHECK(got.state == uint32_t(fw::GuestState::RUNNING));

    // The guest's key sees the image and the secret; the hypervisor sees ciphertext.
    Bytes guest_view(image.size());
    REQUIRE(h.mc->read(*ram, guest_view, mmu::KeyId::slot(asid)).has_value());
    CHECK(std::equal(image.begin(), image.begin() + 0x2400, guest_view.begin()));
    CHECK(Bytes(guest_view.begin() + 0x2400, guest_view.begin() + 0x2440) == secret_text);
    Bytes host_view = h.read_user(direct_map(*ram), image.size());
    CHECK(host_view != image);
    CHECK(std::search(host_view.begin(), host_view.end(), secret_text.begin(), secret_text.end()) == host_view.end());

    // DBG_DECRYPT at an unaligned address and length goes through KVM's bounce page.
    Hva dbg_out = h.user_buffer({}, 64);
    kvm_sev_dbg dbg { direct_map(*ram).value + 0x2405, dbg_out.value + 3, 27 };
    REQUIRE(op(vm, KVM_SEV_DBG_DECRYPT, h.user_struct(dbg), &error) == 0);
    CHECK(h.read_user(dbg_out + 3, 27) == Bytes(secret_text.begin() + 5, secret_text.begin() + 32));

    // DBG_ENCRYPT at an unaligned destination is read-modify-write: neighbours survive.
    Bytes patch = { 'h', 'e', 'l', 'l', 'o', '!', '!' };
    Hva patch_src = h.user_buffer(patch);
    kvm_sev_dbg enc { patch_src.value, direct_map(*ram).value + 0x1003, uint32_t(patch.size()) };
    REQUIRE(op(vm, KVM_SEV_DBG_ENCRYPT, h.user_struct(enc), &error) == 0);
    Bytes after(32);
    REQUIRE(h.mc->read(*ram + 0x1000, after, mmu::KeyId::slot(asid)).has_value());
    CHECK(std::equal(patch.begin(), patch.end(), after.begin() + 3));
    CHECK(std::equal(image.begin() + 0x1000, image.begin() + 0x1003, after.begin()));
    CHECK(std::equal(image.begin() + 0x100a, image.begin() + 0x1020, after.begin() + 10));

    // GET_ATTESTATION_REPORT: length query, then the report.
    kvm_sev_attestation_report rq {};
    Hva rq_at = h.user_struct(rq);
    CHECK(op(vm, KVM_SEV_GET_ATTESTATION_REPORT, rq_at, &error) == -EIO);
    uint32_t rlen = h.read_struct<kvm_sev_attestation_report>(rq_at).len;
    CHECK(rlen == fw::kAttestationReportSize);
    Hva report = h.user_buffer({}, rlen);
    kvm_sev_attestation_report rr {};
    for (int i = 0; i < 16; ++i)
        rr.mnonce[i] = uint8_t(i);
    rr.uaddr = report.value;
    rr.len = rlen;
    REQUIRE(op(vm, KVM_SEV_GET_ATTESTATION_REPORT, h.user_struct(rr), &error) == 0);
    Bytes rep = h.read_user(report, rlen);
    CHECK(Bytes(rep.begin(), rep.begin() + 16) == Bytes(rr.mnonce, rr.mnonce + 16));
    CHECK(Bytes(rep.begin() + 16, rep.begin() + 48) == Bytes(digest.begin(), digest.end()));
}

TEST_CASE("the NODBG policy refuses DBG_DECRYPT through the KVM layer", "[vmm]")
{
    Host h;
    Vm vm(*h.sev, KVM_X86_DEFAULT_VM);
    REQUIRE(op(vm, KVM_SEV_INIT, Hva(0)) == 0);
    kvm_sev_launch_start start {};
    start.policy = fw::policy::NODBG;
    REQUIRE(op(vm, KVM_SEV_LAUNCH_START, h.user_struct(start)) == 0);
    auto ram = h.host->alloc_pages(1);
    REQUIRE(ram.has_value());
    Hva out = h.user_buffer({}, 64);
    kvm_sev_dbg dbg { direct_map(*ram).value, out.value, 64 };
    uint32_t error = 0;
    CHECK(op(vm, KVM_SEV_DBG_DECRYPT, h.user_struct(dbg), &error) == -EIO);
    CHECK(error == uint32_t(fw::Status::POLICY_FAILURE));
    CHECK(op(vm, KVM_SEV_DBG_ENCRYPT, h.user_struct(dbg), &error) == -EIO);
    CHECK(error == uint32_t(fw::Status::POLICY_FAILURE));
}

TEST_CASE("KVM's error conventions for bad calls", "[vmm]")
{
    Host h;
    Vm vm(*h.sev, KVM_X86_DEFAULT_VM);
    uint32_t error = 0;
    // Nothing but INIT before INIT.
    kvm_sev_launch_start start {};
    CHECK(op(vm, KVM_SEV_LAUNCH_START, h.user_struct(start)) == -ENOTTY);
    CHECK(op(vm, KVM_SEV_LAUNCH_FINISH, Hva(0)) == -ENOTTY);
    CHECK(op(vm, 999, Hva(0)) == -EINVAL);
    // INIT2 belongs to VMs created with an SEV type.
    CHECK(op(vm, KVM_SEV_INIT2, h.user_struct(kvm_sev_init {})) == -EINVAL);
    REQUIRE(op(vm, KVM_SEV_INIT, Hva(0)) == 0);
    CHECK(op(vm, KVM_SEV_INIT, Hva(0)) == -EINVAL);
    // A data pointer outside user memory.
    CHECK(op(vm, KVM_SEV_LAUNCH_START, Hva(0x1234)) == -EFAULT);
    // Blobs: a zero length with an address, or over SEV_FW_BLOB_MAX_SIZE.
    Hva some = h.user_buffer(Bytes(16, 1));
    start.dh_uaddr = some.value;
    start.dh_len = 0;
    CHECK(op(vm, KVM_SEV_LAUNCH_START, h.user_struct(start)) == -EINVAL);
    start.dh_len = SEV_FW_BLOB_MAX_SIZE + 1;
    CHECK(op(vm, KVM_SEV_LAUNCH_START, h.user_struct(start)) == -EINVAL);
    // A bad session is the firmware's to refuse: -EIO with its status, and no handle leaks.
    start.dh_len = 16;
    CHECK(op(vm, KVM_SEV_LAUNCH_START, h.user_struct(start), &error) == -EIO);
    CHECK(error != 0);
    CHECK(vm.sev().handle == 0);
    CHECK(h.firmware->guest_count() == 0);
    // Debug with no length, or no destination.
    kvm_sev_dbg dbg { some.value, 0, 16 };
    CHECK(op(vm, KVM_SEV_DBG_DECRYPT, h.user_struct(dbg)) == -EINVAL);
    dbg = { some.value, some.value, 0 };
    CHECK(op(vm, KVM_SEV_DBG_DECRYPT, h.user_struct(dbg)) == -EINVAL);
    // Migration: the command's structure must be readable (copy_from_user), tests/emulator/vmm/migration_test.cpp has the rest.
    CHECK(op(vm, KVM_SEV_SEND_START, Hva(0)) == -EFAULT);
    // Memory slots.
    kvm_userspace_memory_region r { 0, 0, 0x1000, 0x1001, some.value };
    CHECK(vm.set_user_memory_region(r) == -EINVAL);
    r = { 0, 0, 0, 0x1000, 0x5000 };
    CHECK(vm.set_user_memory_region(r) == -EINVAL);
    r = { 0, 0, 0, 0x1000, some.value };
    CHECK(vm.set_user_memory_region(r) == 0);
    r.slot = 1;
    CHECK(vm.set_user_memory_region(r) == -EEXIST);
    r.flags = 0x80;
    CHECK(vm.set_user_memory_region(r) == -EINVAL);
}

TEST_CASE("KVM_SEV_INIT2, VMSA features and ASID ranges", "[vmm]")
{
    Host h;
    uint64_t features = 0;
    Vm es(*h.sev, KVM_X86_SEV_ES_VM);
    CHECK(es.get_device_attr(KVM_X86_GRP_SEV, KVM_X86_SEV_VMSA_FEATURES, features) == 0);
    CHECK(features == SVM_SEV_FEAT_DEBUG_SWAP);
    CHECK(es.get_device_attr(7, KVM_X86_SEV_VMSA_FEATURES, features) == -ENXIO);
    // Legacy INIT is refused on an SEV-typed VM; INIT2 checks its arguments.
    CHECK(op(es, KVM_SEV_INIT, Hva(0)) == -EINVAL);
    kvm_sev_init bad {};
    bad.vmsa_features = 1ull << 40;
    CHECK(op(es, KVM_SEV_INIT2, h.user_struct(bad)) == -EINVAL);
    bad = {};
    bad.ghcb_version = 3;
    CHECK(op(es, KVM_SEV_INIT2, h.user_struct(bad)) == -EINVAL);
    bad = {};
    bad.flags = 1;
    CHECK(op(es, KVM_SEV_INIT2, h.user_struct(bad)) == -EINVAL);
    kvm_sev_init good {};
    good.vmsa_features = SVM_SEV_FEAT_DEBUG_SWAP;
    REQUIRE(op(es, KVM_SEV_INIT2, h.user_struct(good)) == 0);
    CHECK(es.sev().es_active);
    CHECK(es.sev().ghcb_version == 2);
    CHECK(es.sev().asid >= 1);
    CHECK(es.sev().asid < h.sev->config().min_sev_asid);
    CHECK(op(es, KVM_SEV_INIT2, h.user_struct(good)) == -EINVAL);

    Vm plain(*h.sev, KVM_X86_SEV_VM);
    kvm_sev_init with_ghcb {};
    with_ghcb.ghcb_version = 1;
    CHECK(op(plain, KVM_SEV_INIT2, h.user_struct(with_ghcb)) == -EINVAL); // no GHCB without ES
    REQUIRE(op(plain, KVM_SEV_INIT2, h.user_struct(kvm_sev_init {})) == 0);
    CHECK(plain.sev().asid >= h.sev->config().min_sev_asid);
    CHECK(plain.sev().asid != es.sev().asid);

    Vm snp(*h.sev, KVM_X86_SNP_VM);
    kvm_sev_init snp_init {};
    snp_init.ghcb_version = 2;
    CHECK(op(snp, KVM_SEV_INIT2, h.user_struct(snp_init)) == -EOPNOTSUPP);
}

TEST_CASE("two SEV guests run with different keys and cannot read each other's memory", "[vmm]")
{
    Host h;
    Vm a(*h.sev, KVM_X86_DEFAULT_VM), b(*h.sev, KVM_X86_DEFAULT_VM);
    REQUIRE(op(a, KVM_SEV_INIT, Hva(0)) == 0);
    REQUIRE(op(b, KVM_SEV_INIT, Hva(0)) == 0);
    REQUIRE(a.sev().asid != b.sev().asid);
    kvm_sev_launch_start start {};
    REQUIRE(op(a, KVM_SEV_LAUNCH_START, h.user_struct(start)) == 0);
    REQUIRE(op(b, KVM_SEV_LAUNCH_START, h.user_struct(start)) == 0);
    auto ram = h.host->alloc_pages(1);
    REQUIRE(ram.has_value());
    Bytes image = pattern(kPageSize, 9);
    REQUIRE(h.host->copy_to(direct_map(*ram), image).has_value());
    kvm_sev_launch_update_data upd { direct_map(*ram).value, uint32_t(kPageSize) };
    REQUIRE(op(a, KVM_SEV_LAUNCH_UPDATE_DATA, h.user_struct(upd)) == 0);
    Bytes view(kPageSize);
    REQUIRE(h.mc->read(*ram, view, mmu::KeyId::slot(a.sev().asid)).has_value());
    CHECK(view == image);
    REQUIRE(h.mc->read(*ram, view, mmu::KeyId::slot(b.sev().asid)).has_value());
    CHECK(view != image);
    // B's firmware debug access to A's page decrypts with B's key: noise, not A's data.
    Hva out = h.user_buffer({}, 64);
    kvm_sev_dbg dbg { direct_map(*ram).value, out.value, 64 };
    REQUIRE(op(b, KVM_SEV_DBG_DECRYPT, h.user_struct(dbg)) == 0);
    CHECK(h.read_user(out, 64) != Bytes(image.begin(), image.begin() + 64));
}

TEST_CASE("a destroyed VM's ASID is reused only after WBINVD and DF_FLUSH", "[vmm]")
{
    Host h;
    uint32_t first_asid = 0;
    {
        Vm vm(*h.sev, KVM_X86_DEFAULT_VM);
        REQUIRE(op(vm, KVM_SEV_INIT, Hva(0)) == 0);
        first_asid = vm.sev().asid;
        REQUIRE(op(vm, KVM_SEV_LAUNCH_START, h.user_struct(kvm_sev_launch_start {})) == 0);
        CHECK(h.firmware->guest_count() == 1);
    }
    // DEACTIVATE + DECOMMISSION ran; the ASID waits in the reclaim set.
    CHECK(h.firmware->guest_count() == 0);
    CHECK(h.sev->asid_in_use(first_asid));
    Vm next(*h.sev, KVM_X86_DEFAULT_VM);
    REQUIRE(op(next, KVM_SEV_INIT, Hva(0)) == 0);
    CHECK(next.sev().asid != first_asid);
}
