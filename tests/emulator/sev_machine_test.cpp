// A Machine running an SEV guest, built from C++ (no CLI, no QMP): the launch through the
// firmware, the measurement against the guest owner's own computation, the launch secret, the
// QMP views (query, capabilities, attestation report, pmemsave's guest-physical view), bad
// configurations, and a whole run of the SEV-aware guest (tests/guests/sev.c).
//
// The independent references are the guest owner's library (tools/sevemu-owner: session keys,
// verify_measurement over kernel_launch_digest(), build_secret, verify_attestation_report with
// the PEK) and the memory controller read with the guest's key; never the runtime's own output.
//
// Argument (compile-time): SEV_GUEST, the path of guest-sev.elf.
#include "cpu/cpu_model.h"
#include "devices/lapic.h"
#include "emulator/machine.h"
#include "emulator/sev_launch.h"
#include "emulator/sev_runtime.h"
#include "emulator/vmm/vcpu.h"
#include "emulator/vmm/vm.h"
#include "firmware/firmware.h"
#include "firmware/sev_cert.h"
#include "mmu/memory_controller.h"
#include "tools/sevemu-owner/owner.h"
#include "tests/emulator/synthetic_linux.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <string>
#include <unistd.h>

using namespace sevemu;
using namespace sevemu::emulator;
namespace fs = std::filesystem;

namespace {

// One temporary directory for the run: the platform (its identity persists across machines, as
// a real chip's does) and the owner's files.
fs::path const& work_dir()
{
    static fs::path dir = [] {
        std::string tmpl = (fs::temp_directory_path() / "sevemu-sev-machine-XXXXXX").string();
        if (!::mkdtemp(tmpl.data()))
            std::abort();
        return fs::path(tmpl);
    }();
    static struct Cleanup {
        ~Cleanup()
        {
            std::error_code ec;
            fs::remove_all(dir, ec);
        }
    } cleanup;
    return dir;
}

void write_text(fs::path const& p, std::string const& text)
{
    std::ofstream out(p, std::ios::binary);
    out << text;
}

MachineConfig sev_config(uint32_t policy = 0x1, std::string* serial = nullptr)
{
    MachineConfig c;
    c.memory_size = 32ull << 20;
    c.kernel = SEV_GUEST;
    c.platform_dir = (work_dir() / "platform").string();
    c.debug_exit = devices::DebugExitConfig { 0xF4, 4 };
    if (serial) {
        c.serial.kind = SerialConfig::Kind::Callback;
        c.serial.callback = [serial](uint8_t b) { serial->push_back(char(b)); };
    }
    SevGuestConfig g;
    g.type = SevGuestConfig::Type::Sev;
    g.id = "sev0";
    g.policy = policy;
    g.cbitpos = 51;
    g.reduced_phys_bits = 1;
    c.confidential_guest = g;
    return c;
}

std::unique_ptr<Machine> make(MachineConfig c)
{
    auto m = Machine::create(std::move(c));
    if (!m)
        FAIL("Machine::create: " << m.error().message);
    return std::move(*m);
}

std::string create_error(MachineConfig c)
{
    auto m = Machine::create(std::move(c));
    REQUIRE_FALSE(m.has_value());
    return m.error().message;
}

// The platform's PDH, as a guest owner gets it (here from query-sev-capabilities of a machine
// launched without a session).
Bytes platform_pdh()
{
    static Bytes pdh = [] {
        auto m = make(sev_config());
        auto cap = m->sev()->capabilities();
        REQUIRE(cap.has_value());
        return cap->pdh;
    }();
    return pdh;
}

struct OwnerSession {
    owner::Session session;
    std::string godh_file, session_file;
};

// `sevemu-owner session`: GODH certificate and session blob as base64 files, as QEMU reads them.
OwnerSession owner_session(uint32_t policy, std::string const& name)
{
    auto s = owner::make_session(platform_pdh(), policy);
    REQUIRE(s.has_value());
    OwnerSession o { std::move(*s), (work_dir() / (name + "_godh.b64")).string(), (work_dir() / (name + "_session.b64")).string() };
    write_text(o.godh_file, to_base64(o.session.godh_cert) + "\n");
    write_text(o.session_file, to_base64(o.session.session_blob) + "\n");
    return o;
}

MachineConfig with_session(OwnerSession const& o, uint32_t policy = 0x1, std::string* serial = nullptr)
{
    auto c = sev_config(policy, serial);
    c.confidential_guest->dh_cert_file = o.godh_file;
    c.confidential_guest->session_file = o.session_file;
    return c;
}

owner::PlatformVersion version_of(SevInfo const& info) { return { info.api_major, info.api_minor, info.build_id }; }

// The guest's secret page (tests/guests/sev.c): "SEVEMUS1", length, reserved, the bytes.
Bytes secret_page(std::string const& text)
{
    Bytes b { 'S', 'E', 'V', 'E', 'M', 'U', 'S', '1' };
    uint32_t n = uint32_t(text.size());
    for (int i = 0; i < 4; ++i)
        b.push_back(uint8_t(n >> (8 * i)));
    b.insert(b.end(), 4, 0);
    b.insert(b.end(), text.begin(), text.end());
    return b;
}

constexpr uint64_t kSecretGpa = 0x800000; // tests/guests/sev.h SEV_SECRET_GPA

} // namespace

TEST_CASE("sev machine: without a session the launch stops in launch-secret; every value is the firmware's", "[sev]")
{
    auto m = make(sev_config());
    auto* sev = m->sev();
    REQUIRE(sev != nullptr);
    CHECK(sev->state() == SevState::LaunchSecret);
    auto info = sev->query();
    REQUIRE(info.has_value());
    auto params = firmware::FirmwareParams::for_model(CpuModel::Milan);
    CHECK(info->api_major == params.api_major);
    CHECK(info->api_minor == params.api_minor);
    CHECK(info->build_id == params.build);
    CHECK(info->policy == 0x1);
    CHECK(info->handle != 0);
    CHECK(info->state == SevState::LaunchSecret);
    CHECK(sev_state_name(info->state) == "launch-secret");
    auto measurement = sev->launch_measurement();
    REQUIRE(measurement.has_value());
    CHECK(measurement->size() == owner::kMeasurementSize);
    // The guest's view of the machine is the guest's RAM, not the DRAM with the host reserve.
    CHECK(m->memory().dram_size() == SevRuntime::dram_size(32ull << 20));
    REQUIRE(m->multiboot().has_value());
    CHECK(m->multiboot()->mem_upper_kib == (32u << 10) - 1024 - 128);
    // The vCPU is in the Multiboot hand-off state.
    auto& s = sev->vcpu().state();
    CHECK(s.rip == m->multiboot()->entry);
    CHECK(s.rax == 0x2BADB002);
    CHECK(sev->vcpu().gprs()[3] == m->multiboot()->info_addr);
    CHECK(s.cs.selector == 0x08);
    CHECK(s.cs.attrib == 0xC9B);
    CHECK(s.ss.attrib == 0xC93);
    CHECK(s.gdtr.base == kMultibootGdtAddr);
    CHECK(s.cr0 == 0x11);
    CHECK((s.efer & (1u << 12)) != 0);
    // The guest's CPUID is a KVM guest's (KVM_SET_CPUID2 as QEMU gives it): the hypervisor bit,
    // the "KVMKVMKVM" signature leaf and its features leaf, leaf 0xB listed up to and including
    // its first invalid level (ECX[15:8] = 0), and leaf 8000_001F with SEV (EAX bit 1).
    auto find = [&](uint32_t fn, uint32_t index) -> vmm::CpuidEntry const* {
        for (auto const& e : sev->vcpu().cpuid_entries())
            if (e.function == fn && (e.index == index || e.index == 0xFFFFFFFFu))
                return &e;
        return nullptr;
    };
    REQUIRE(find(1, 0) != nullptr);
    CHECK((find(1, 0)->ecx & (1u << 31)) != 0);
    CHECK((find(1, 0)->ebx >> 24) == 0);
    auto const* kvm = find(0x40000000, 0);
    REQUIRE(kvm != nullptr);
    char sig[13] = {};
    std::memcpy(sig, &kvm->ebx, 4);
    std::memcpy(sig + 4, &kvm->ecx, 4);
    std::memcpy(sig + 8, &kvm->edx, 4);
    CHECK(std::string(sig) == "KVMKVMKVM");
    CHECK(find(0x40000001, 0) != nullptr);
    size_t levels = 0;
    for (auto const& e : sev->vcpu().cpuid_entries())
        if (e.function == 0xB)
            ++levels;
    if (levels) {
        REQUIRE(find(0xB, uint32_t(levels - 1)) != nullptr);
        CHECK((find(0xB, uint32_t(levels - 1))->ecx & 0xFF00) == 0);
    }
    REQUIRE(find(0x8000001F, 0) != nullptr);
    CHECK((find(0x8000001F, 0)->eax & 2) != 0);
    // The secret needs the session's keys; LAUNCH_FINISH moves the guest to running.
    REQUIRE(sev->launch_finish().has_value());
    CHECK(sev->query()->state == SevState::Running);
    CHECK(sev->launch_measurement().has_value()); // still available, as in QEMU
}

TEST_CASE("sev machine: the measurement is the owner's HMAC over kernel_launch_digest()", "[sev]")
{
    auto o = owner_session(0x1, "measure");
    auto m = make(with_session(o));
    auto* sev = m->sev();
    auto info = sev->query();
    REQUIRE(info.has_value());
    auto measurement = sev->launch_measurement();
    REQUIRE(measurement.has_value());
    // The owner recomputes the digest from the kernel file alone and checks the HMAC with its TIK.
    auto digest = kernel_launch_digest(KernelLaunch { 32ull << 20, SEV_GUEST, "", "" });
    REQUIRE(digest.has_value());
    CHECK(digest->ranges.size() == sev->measured_ranges().size());
    auto ok = owner::verify_measurement(o.session.keys.tik, *measurement, version_of(*info), 0x1, digest->digest);
    INFO((ok ? std::string() : ok.error().message));
    CHECK(ok.has_value());
    // Another command line (here -append) is another launch digest: the check fails.
    auto other = kernel_launch_digest(KernelLaunch { 32ull << 20, SEV_GUEST, "", "console=ttyS0" });
    REQUIRE(other.has_value());
    CHECK_FALSE(owner::verify_measurement(o.session.keys.tik, *measurement, version_of(*info), 0x1, other->digest).has_value());
    // So is another -m (the E820 map and mem_upper are measured).
    auto bigger = kernel_launch_digest(KernelLaunch { 64ull << 20, SEV_GUEST, "", "" });
    REQUIRE(bigger.has_value());
    CHECK(bigger->digest != digest->digest);

    // The attestation report: signed by the platform's PEK, for this mnonce, over this digest.
    auto cap = sev->capabilities();
    REQUIRE(cap.has_value());
    CHECK(cap->pdh == platform_pdh());
    REQUIRE(cap->cert_chain.size() == 3 * firmware::kSevCertSize);
    CHECK(cap->cpu0_id.size() == 64);
    CHECK(cap->cbitpos == 51);
    auto pek = firmware::SevCert::parse(std::span(cap->cert_chain).first(firmware::kSevCertSize));
    REQUIRE(pek.has_value());
    owner::Nonce128 mnonce {};
    for (size_t i = 0; i < mnonce.size(); ++i)
        mnonce[i] = uint8_t(0xA0 + i);
    auto report = sev->attestation_report(mnonce);
    REQUIRE(report.has_value());
    auto verified = owner::verify_attestation_report(*report, *pek, mnonce);
    REQUIRE(verified.has_value());
    CHECK(verified->launch_digest == digest->digest);
    CHECK(verified->policy == 0x1);
    CHECK_FALSE(sev->attestation_report(std::span(mnonce).first(8)).has_value());
}

TEST_CASE("sev machine: the launch secret goes in only in launch-secret, encrypted for the guest", "[sev]")
{
    auto o = owner_session(0x1, "secret");
    auto m = make(with_session(o));
    auto* sev = m->sev();
    auto measurement = sev->launch_measurement();
    REQUIRE(measurement.has_value());
    Bytes plain = secret_page("open sesame");
    auto packet = owner::build_secret(o.session.keys.tek, o.session.keys.tik, *measurement, plain);
    REQUIRE(packet.has_value());

    // Wrong inputs: errors, and the guest stays in launch-secret.
    auto e = sev->inject_launch_secret(packet->header, packet->ciphertext, 0x7FFF'F000'0000ull);
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error().message.find("No memory is mapped at address") != std::string::npos);
    e = sev->inject_launch_secret(packet->header, packet->ciphertext, (32ull << 20) - 16);
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error().message.find("exceeded") != std::string::npos);
    e = sev->inject_launch_secret({}, packet->ciphertext, kSecretGpa);
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error().message == "SEV: Failed to decode sequence header");
    // A packet bound to another measurement: the firmware refuses its MAC.
    Bytes other = *measurement;
    other[0] ^= 1;
    auto forged = owner::build_secret(o.session.keys.tek, o.session.keys.tik, other, plain);
    REQUIRE(forged.has_value());
    e = sev->inject_launch_secret(forged->header, forged->ciphertext, kSecretGpa);
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error().message.find("BAD_MEASUREMENT") != std::string::npos);
    CHECK(sev->state() == SevState::LaunchSecret);

    REQUIRE(sev->inject_launch_secret(packet->header, packet->ciphertext, kSecretGpa).has_value());
    // The guest (its ASID's key) reads the secret; the hypervisor (pmemsave's view) does not.
    Bytes guest_view(plain.size()), host_view(plain.size());
    REQUIRE(m->memory().read(Spa(SevRuntime::kGuestRamBase + kSecretGpa), guest_view, mmu::KeyId::slot(sev->asid())).has_value());
    CHECK(guest_view == plain);
    REQUIRE(sev->read_guest_physical(kSecretGpa, host_view));
    CHECK(host_view != plain);
    CHECK(std::search(host_view.begin(), host_view.end(), plain.begin() + 16, plain.end()) == host_view.end());

    // After LAUNCH_FINISH (the guest's first run) no secret goes in.
    REQUIRE(sev->launch_finish().has_value());
    e = sev->inject_launch_secret(packet->header, packet->ciphertext, kSecretGpa);
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error().message == "SEV: Not in correct state. (LSECRET) 3");
}

TEST_CASE("sev machine: pmemsave's guest-physical view is ciphertext for the launched image", "[sev]")
{
    auto m = make(sev_config());
    auto* sev = m->sev();
    auto loaded = load_kernel_launch(KernelLaunch { 32ull << 20, SEV_GUEST, "", "" });
    REQUIRE(loaded.has_value());
    auto const& range = sev->measured_ranges().back();
    Bytes plain(range.size), seen(range.size);
    REQUIRE(loaded->scratch->read(Spa(range.gpa), plain, mmu::KeyId::none()).has_value());
    REQUIRE(sev->read_guest_physical(range.gpa, seen));
    CHECK(seen != plain);
    uint8_t const magic[4] = { 0x02, 0xB0, 0xAD, 0x1B }; // the Multiboot header's magic
    CHECK(std::search(plain.begin(), plain.end(), magic, magic + 4) != plain.end());
    CHECK(std::search(seen.begin(), seen.end(), magic, magic + 4) == seen.end());
    // With the guest's key, DRAM holds exactly what the loader wrote.
    Bytes decrypted(range.size);
    REQUIRE(m->memory().read(Spa(SevRuntime::kGuestRamBase + range.gpa), decrypted, mmu::KeyId::slot(sev->asid())).has_value());
    CHECK(decrypted == plain);
    // A page the launch never touched is plain zeros in DRAM; beyond guest RAM nothing reads.
    Bytes zero(64, 0xEE);
    REQUIRE(sev->read_guest_physical(0x500000, zero));
    CHECK(zero == Bytes(64, 0));
    CHECK_FALSE(sev->read_guest_physical((32ull << 20) - 32, zero));
}

TEST_CASE("sev machine: bad configurations are one clear error, nothing crashes", "[sev]")
{
    auto c = sev_config();
    c.confidential_guest->dh_cert_file = (work_dir() / "no-such-godh.b64").string();
    auto msg = create_error(c);
    CHECK(msg.find("dh-cert-file") != std::string::npos);
    CHECK(msg.find("no such file") != std::string::npos);

    write_text(work_dir() / "garbage.b64", "this is %%% not base64 at all\n");
    c = sev_config();
    c.confidential_guest->dh_cert_file = (work_dir() / "garbage.b64").string();
    CHECK(create_error(c).find("not base64") != std::string::npos);

    // Valid base64 of bytes that are no certificate: the firmware refuses them.
    write_text(work_dir() / "junk.b64", to_base64(Bytes(0x824, 0x5A)) + "\n");
    c = sev_config();
    c.confidential_guest->dh_cert_file = (work_dir() / "junk.b64").string();
    msg = create_error(c);
    CHECK(msg.find("LAUNCH_START failed") != std::string::npos);

    // A session made for policy 0x1 does not open a launch with policy 0x0 (its MAC covers it).
    auto o = owner_session(0x1, "policy");
    msg = create_error(with_session(o, 0x0));
    CHECK(msg.find("LAUNCH_START failed") != std::string::npos);
    // The session blob of another GODH key: the firmware refuses its MAC.
    auto o2 = owner_session(0x1, "other");
    c = with_session(o);
    c.confidential_guest->session_file = o2.session_file;
    msg = create_error(c);
    CHECK(msg.find("LAUNCH_START failed") != std::string::npos);

    c = sev_config(0x5); // NODBG | ES, on a model without SEV-ES (EPYC, Naples)
    c.cpu_model = CpuModel::Naples;
    c.confidential_guest->cbitpos = cpu_model_info(CpuModel::Naples).c_bit;
    CHECK(create_error(c).find("host SEV-ES support unavailable") != std::string::npos);
    // An -incoming SEV-ES target is built without a launch: its vCPUs get their VMSAs from the
    // stream (RECEIVE_UPDATE_VMSA) and are not protected before; on Naples it is refused as a launch is.
    auto incoming = Machine::create_incoming(sev_config(0x5));
    REQUIRE(incoming.has_value());
    REQUIRE((*incoming)->sev() != nullptr);
    CHECK((*incoming)->sev()->sev_es());
    CHECK_FALSE((*incoming)->sev()->vcpu(0).guest_state_protected());
    incoming->reset();
    c = sev_config(0x5);
    c.cpu_model = CpuModel::Naples;
    c.confidential_guest->cbitpos = cpu_model_info(CpuModel::Naples).c_bit;
    auto naples = Machine::create_incoming(c);
    REQUIRE_FALSE(naples.has_value());
    CHECK(naples.error().message.find("SEV-ES") != std::string::npos);
    c = sev_config();
    c.confidential_guest->type = SevGuestConfig::Type::SevSnp;
    CHECK(create_error(c).find("SEV-SNP") != std::string::npos);
    c = sev_config();
    c.memory_size = 3ull << 30;
    CHECK(create_error(c).find("at most 2048 MiB") != std::string::npos);
    c = sev_config();
    c.confidential_guest->kernel_hashes = true;
    CHECK(create_error(c).find("kernel-hashes") != std::string::npos);
    c = sev_config();
    c.platform_dir.clear();
    CHECK(create_error(c).find("platform") != std::string::npos);
    c = sev_config();
    c.kernel = (work_dir() / "no-such-kernel.elf").string();
    CHECK(create_error(c).find("-kernel " + (work_dir() / "no-such-kernel.elf").string() + ": no such file") != std::string::npos);

    // After all that the platform still launches guests.
    auto m = make(sev_config());
    CHECK(m->sev()->state() == SevState::LaunchSecret);
}

TEST_CASE("sev machine: the SEV-aware guest runs encrypted and prints the owner's secret", "[sev][run]")
{
    std::string serial;
    auto o = owner_session(0x1, "run");
    auto m = make(with_session(o, 0x1, &serial));
    auto* sev = m->sev();
    auto measurement = sev->launch_measurement();
    REQUIRE(measurement.has_value());
    std::string text = "the owner's launch secret";
    auto packet = owner::build_secret(o.session.keys.tek, o.session.keys.tik, *measurement, secret_page(text));
    REQUIRE(packet.has_value());
    REQUIRE(sev->inject_launch_secret(packet->header, packet->ciphertext, kSecretGpa).has_value());

    auto out = m->run();
    INFO(serial);
    INFO(out.message);
    CHECK(sev->state() == SevState::Running);
    CHECK(out.reason == RunOutcome::Reason::DebugExit);
    CHECK(out.exit_status == 33);
    auto digest = firmware::sha256(Bytes(text.begin(), text.end()));
    std::string want = "sha256(\"abc\") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
                       "sev: active, SEV_STATUS=0x1, C-bit 51\n"
                       "secret: "
        + std::to_string(text.size()) + " bytes, sha256 " + to_hex(digest) + "\n"
        + "private page 0x901000: sevemu private page: the hypervisor sees only ciphertext here\n"
          "shared page 0x900000: sevemu shared page: hello, hypervisor (hypercall 0)\n"
          "sev guest: done\n";
    CHECK(serial == want);
    // The guest shared one page with KVM_HC_MAP_GPA_RANGE (attributes: 4 KiB, decrypted).
    REQUIRE(sev->gpa_range_changes().size() == 1);
    CHECK(sev->gpa_range_changes()[0].gpa == 0x900000);
    CHECK(sev->gpa_range_changes()[0].pages == 1);
    CHECK(sev->gpa_range_changes()[0].attributes == 0);
    // ... which the VM keeps in its shared-regions list (gfn 0x900, one page), and the guest's
    // entry said it is ready to migrate (MSR_KVM_MIGRATION_CONTROL, offered in CPUID 0x40000001).
    REQUIRE(sev->vm().shared_regions().size() == 1);
    CHECK(sev->vm().shared_regions()[0].gfn_start == 0x900);
    CHECK(sev->vm().shared_regions()[0].npages == 1);
    CHECK(sev->migration_ready());
    CHECK(sev->vm().migration_control() == vmm::KVM_MIGRATION_READY);
    // The VMM's checks of the attributes: a page size beyond 1G or a bit beside the encryption
    // bit is -KVM_EINVAL and changes nothing; a good one updates the list.
    CHECK(sev->map_gpa_range({ 0x901000, 1, 3 }) == uint64_t(-22));
    CHECK(sev->map_gpa_range({ 0x901000, 1, 0x20 }) == uint64_t(-22));
    CHECK(sev->vm().shared_regions().size() == 1);
    CHECK(sev->map_gpa_range({ 0x900000, 1, vmm::KVM_MAP_GPA_RANGE_ENCRYPTED }) == 0);
    CHECK(sev->vm().shared_regions().empty());
    // What the hypervisor sees: the shared page in plaintext, the private page as ciphertext.
    std::string shared_msg = "sevemu shared page: hello, hypervisor";
    std::string private_msg = "sevemu private page: the hypervisor sees only ciphertext here";
    Bytes shared(kPageSize), priv(kPageSize);
    REQUIRE(sev->read_guest_physical(0x900000, shared));
    REQUIRE(sev->read_guest_physical(0x901000, priv));
    CHECK(std::string(shared.begin(), shared.begin() + shared_msg.size()) == shared_msg);
    CHECK(std::search(priv.begin(), priv.end(), private_msg.begin(), private_msg.end()) == priv.end());
}

// --- SEV-ES (policy 0x5): the SEV-ES guest (tests/guests/sev_es.c), the VMSAs in the launch.
namespace {
MachineConfig sev_es_config(unsigned smp, std::string* serial = nullptr)
{
    MachineConfig c = sev_config(0x5, serial);
    c.kernel = SEV_ES_GUEST;
    c.smp = smp;
    return c;
}
} // namespace

TEST_CASE("sev-es machine: the launch measures one VMSA per vCPU; the owner's digest verifies; VMSAs are ciphertext",
    "[sev][es]")
{
    for (unsigned smp : { 1u, 2u }) {
        INFO("smp " << smp);
        auto o = owner_session(0x5, "es" + std::to_string(smp));
        auto c = with_session(o, 0x5);
        c.kernel = SEV_ES_GUEST;
        c.smp = smp;
        auto m = make(c);
        auto* sev = m->sev();
        auto info = sev->query();
        REQUIRE(info.has_value());
        CHECK(info->policy == 0x5);
        auto measurement = sev->launch_measurement();
        REQUIRE(measurement.has_value());
        // The owner's digest: the pages (the AP page at 0xFE000 among them) and the VMSAs.
        KernelLaunch launch { 32ull << 20, SEV_ES_GUEST, "", "", smp };
        launch.sev_es = true;
        auto digest = kernel_launch_digest(launch);
        REQUIRE(digest.has_value());
        CHECK(digest->vmsas == smp);
        CHECK(std::count_if(digest->ranges.begin(), digest->ranges.end(),
                  [](MeasuredRange const& r) { return r.gpa == kSevEsApPageGpa && r.size == kPageSize; }) == 1);
        auto ok = owner::verify_measurement(o.session.keys.tik, *measurement, version_of(*info), 0x5, digest->digest);
        INFO((ok ? std::string() : ok.error().message));
        CHECK(ok.has_value());
        // The registers are measured: another vCPU count, or no VMSAs at all, is another digest.
        launch.smp = smp + 1;
        CHECK(kernel_launch_digest(launch)->digest != digest->digest);
        launch.smp = smp;
        launch.sev_es = false;
        CHECK(kernel_launch_digest(launch)->digest != digest->digest);

        // The hypervisor's view of each VMSA page is ciphertext; under the guest's key it is the
        // launch image (the BSP at the Multiboot entry, an AP at the AP stub).
        auto loaded = load_kernel_launch(KernelLaunch { 32ull << 20, SEV_ES_GUEST, "", "", smp, 51, true });
        REQUIRE(loaded.has_value());
        REQUIRE(loaded->sev_es_vcpus.size() == smp);
        REQUIRE(sev->vcpu_count() == smp);
        for (unsigned i = 0; i < smp; ++i) {
            auto plain = sev_es_launch_vmsa(loaded->sev_es_vcpus[i]);
            Bytes host(kPageSize), guest(kPageSize);
            Spa at = sev->vcpu(i).vmsa_address();
            REQUIRE(m->memory().read(at, host, mmu::KeyId::none()).has_value());
            REQUIRE(m->memory().read(at, guest, mmu::KeyId::slot(sev->asid())).has_value());
            CHECK(guest == Bytes(plain.begin(), plain.end()));
            CHECK(host != guest);
            uint64_t rip = 0;
            std::memcpy(&rip, plain.data() + 0x178, 8);
            CHECK(rip == (i == 0 ? 0x100020u : kSevEsApStubIp)); // guest-sev-es.elf's _start; the stub
            // No 8-byte run of the plaintext's nonzero qwords (RIP, CR0, G_PAT, ...) shows through.
            for (size_t off = 0; off < kPageSize; off += 8) {
                uint64_t q = 0;
                std::memcpy(&q, plain.data() + off, 8);
                if (q > 0xFFFF)
                    CHECK(std::search(host.begin(), host.end(), plain.begin() + off, plain.begin() + off + 8) == host.end());
            }
            CHECK(sev->vcpu(i).guest_state_protected());
        }
    }
}

TEST_CASE("sev-es machine: the SEV-ES guest runs; #VC and the GHCB serve its CPUID, I/O, MSR and hypercall",
    "[sev][es][run]")
{
    std::string serial;
    auto m = make(sev_es_config(1, &serial));
    auto* sev = m->sev();
    auto out = m->run();
    INFO(serial);
    INFO(out.message);
    CHECK(out.reason == RunOutcome::Reason::DebugExit);
    CHECK(out.exit_status == 33);
    std::ifstream f(SEV_ES_EXPECTED, std::ios::binary);
    std::string want((std::istreambuf_iterator<char>(f)), {});
    CHECK(serial == want);
    // The GHCB page (0x8000, tests/guests/sev.h) is shared: the hypervisor reads the last request
    // there in the clear (the IOIO of the guest's isa-debug-exit write: SW_EXITCODE 0x7B), and
    // the guest reported it (KVM_HC_MAP_GPA_RANGE) beside its shared page 0x900000.
    CHECK(sev->vm().is_shared(0x8000 >> 12));
    CHECK(sev->vm().is_shared(0x900000 >> 12));
    Bytes ghcb(kPageSize);
    REQUIRE(sev->read_guest_physical(0x8000, ghcb));
    uint64_t exit_code = 0;
    std::memcpy(&exit_code, ghcb.data() + 0x390, 8);
    CHECK(exit_code == 0x7B);
    // The private page is ciphertext, as for SEV.
    std::string private_msg = "sevemu private page: the hypervisor sees only ciphertext here";
    Bytes priv(kPageSize);
    REQUIRE(sev->read_guest_physical(0x901000, priv));
    CHECK(std::search(priv.begin(), priv.end(), private_msg.begin(), private_msg.end()) == priv.end());
}

TEST_CASE("sev-es machine: the guest's termination request ends the run with its reason and status 1",
    "[sev][es][run]")
{
    std::string serial;
    auto c = sev_es_config(1, &serial);
    c.append = "sev-es-terminate";
    auto m = make(c);
    auto out = m->run();
    INFO(serial);
    CHECK(out.reason == RunOutcome::Reason::GuestPanic);
    CHECK(out.exit_status == 1);
    CHECK(out.message == "the SEV-ES guest asked to be terminated: reason set 0, code 0 (general termination request)");
    CHECK(serial.find("sev-es: asking the hypervisor to terminate this guest\n") != std::string::npos);
}

TEST_CASE("sev-es machine: a plain SEV guest without a #VC handler cannot run as SEV-ES; the run ends cleanly",
    "[sev][es][run]")
{
    // guest-sev.elf's first CPUID raises #VC with no IDT: #DF, then shutdown. An encrypted guest
    // cannot be relaunched, so the run ends with status 1 (no crash, no hang).
    auto c = sev_config(0x5);
    auto m = make(c);
    auto out = m->run();
    INFO(out.message);
    CHECK(out.reason == RunOutcome::Reason::TripleFault);
    CHECK(out.exit_status == 1);
}

TEST_CASE("sev machine: -no-shutdown keeps the machine up after the guest's power-off", "[sev][run]")
{
    std::string serial;
    auto c = sev_config(0x1, &serial);
    c.debug_exit.reset(); // the guest powers off through ACPI PM instead
    c.no_shutdown = true;
    auto m = make(std::move(c));
    std::vector<Machine::Event> events;
    std::string shared;
    m->set_event_sink([&](Machine::Event e) {
        events.push_back(e);
        if (e != Machine::Event::Shutdown)
            return;
        // On the machine's thread, as a QMP request would be: the guest is over, its memory stays.
        CHECK(m->shut_down());
        REQUIRE(m->guest_ended().has_value());
        CHECK(m->guest_ended()->reason == RunOutcome::Reason::PowerOff);
        Bytes page(64);
        CHECK(m->sev()->read_guest_physical(0x900000, page));
        shared.assign(page.begin(), page.end());
        m->quit();
    });
    auto out = m->run();
    INFO(serial);
    CHECK(out.reason == RunOutcome::Reason::Quit);
    CHECK(out.exit_status == 0);
    CHECK(events == std::vector<Machine::Event> { Machine::Event::Shutdown, Machine::Event::Stop });
    CHECK(shared.rfind("sevemu shared page: hello, hypervisor", 0) == 0);
    CHECK(serial.find("sev guest: done\n") != std::string::npos);
}

TEST_CASE("sev machine: every EPYC model launches and runs the SEV guest", "[sev][run]")
{
    for (CpuModel model : kAllCpuModels) {
        auto const& info = cpu_model_info(model);
        INFO(info.name);
        std::string serial;
        auto c = sev_config(0x1, &serial);
        c.cpu_model = model;
        c.platform_dir = (work_dir() / ("platform-" + std::string(info.name))).string();
        c.confidential_guest->cbitpos = info.c_bit;
        auto m = make(std::move(c));
        auto* sev = m->sev();
        auto q = sev->query();
        REQUIRE(q.has_value());
        auto params = firmware::FirmwareParams::for_model(model);
        CHECK(q->api_major == params.api_major);
        CHECK(q->api_minor == params.api_minor);
        // A guest of a model without SEV-ES still gets an SEV ASID (min_sev_asid..max_asid).
        CHECK(sev->asid() >= info.min_sev_asid);
        CHECK(sev->asid() <= info.num_encrypted_guests);
        auto out = m->run();
        INFO(serial << out.message);
        CHECK(out.exit_status == 33);
        CHECK(serial.find(fmt::format("sev: active, SEV_STATUS=0x1, C-bit {}\n", info.c_bit)) != std::string::npos);
        CHECK(serial.find("sev guest: done\n") != std::string::npos);
    }
}

// --- -smp 2: the AP of an SEV guest, started the PC way (Intel SDM vol 3 §9.4.4 "MP
// Initialization Example"; APM vol 2 §16.5) — through the BSP's xAPIC ICR (MMIO, so #NPF and
// the hypervisor's emulation), in real mode from memory encrypted with the guest's key (paging
// off: every access private, APM vol 2 §15.34.5). The code below was assembled with GNU as
// (source in the comments) and is written into guest RAM with the guest's key, as the guest
// itself would have written it.
namespace {

// The AP's trampoline at 0x8000 (SIPI vector 8), ".code16" then ".code32":
//   cli; lgdtl %cs:0x90; mov %cr0,%eax; or $1,%eax; mov %eax,%cr0; ljmpl $0x08,$0x801a
//   0x801a: mov $0x10,%ax; mov %ax,%ds/%es/%ss; mov $0x9800,%esp; lidtl 0x8096
//           movl $0x1ff,0xfee000f0            ; its own LAPIC: software-enabled
//           mov 0xfee00020,%eax; mov %eax,0x9008 ; its own LAPIC ID register
//           mov $1,%eax; cpuid; mov %ebx,0x900c   ; its own CPUID leaf 1
//           movl $0x12345678,0x9000; sti; 1: hlt; jmp 1b
//   0x805f (vector 0x40): movl $0xcafef00d,0x9004; movl $0,0xfee000b0 (EOI); iret
//   0x8078: GDT (null, flat code 0x08, flat data 0x10); 0x8090: GDTR; 0x8096: IDTR (0x8800, 0x207)
//   0x8a00: the interrupt gate of vector 0x40 -> 0x08:0x805f
constexpr uint8_t kApCode[] = { 0xFA, 0x2E, 0x66, 0x0F, 0x01, 0x16, 0x90, 0x00, 0x0F, 0x20, 0xC0, 0x66, 0x83, 0xC8,
    0x01, 0x0F, 0x22, 0xC0, 0x66, 0xEA, 0x1A, 0x80, 0x00, 0x00, 0x08, 0x00, 0x66, 0xB8, 0x10, 0x00, 0x8E, 0xD8, 0x8E,
    0xC0, 0x8E, 0xD0, 0xBC, 0x00, 0x98, 0x00, 0x00, 0x0F, 0x01, 0x1D, 0x96, 0x80, 0x00, 0x00, 0xC7, 0x05, 0xF0, 0x00,
    0xE0, 0xFE, 0xFF, 0x01, 0x00, 0x00, 0xA1, 0x20, 0x00, 0xE0, 0xFE, 0xA3, 0x08, 0x90, 0x00, 0x00, 0xB8, 0x01, 0x00,
    0x00, 0x00, 0x0F, 0xA2, 0x89, 0x1D, 0x0C, 0x90, 0x00, 0x00, 0xC7, 0x05, 0x00, 0x90, 0x00, 0x00, 0x78, 0x56, 0x34,
    0x12, 0xFB, 0xF4, 0xEB, 0xFD, 0xC7, 0x05, 0x04, 0x90, 0x00, 0x00, 0x0D, 0xF0, 0xFE, 0xCA, 0xC7, 0x05, 0xB0, 0x00,
    0xE0, 0xFE, 0x00, 0x00, 0x00, 0x00, 0xCF, 0x8D, 0x74, 0x26, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9A, 0xCF, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x92, 0xCF, 0x00, 0x17, 0x00, 0x78,
    0x80, 0x00, 0x00, 0x07, 0x02, 0x00, 0x88, 0x00, 0x00 };
constexpr uint8_t kApGate[] = { 0x5F, 0x80, 0x08, 0x00, 0x00, 0x8E, 0x00, 0x00 };
// The BSP's code at 0x20000 (32-bit, paging off, as the Multiboot hand-off leaves it):
//   movl $0x1ff,0xfee000f0; movl $0x01000000,0xfee00310 (ICR high: APIC ID 1)
//   movl $0x4500,0xfee00300 (INIT, assert); movl $0x4608,0xfee00300 (SIPI 8), twice
//   1: cmpl $0x12345678,0x9000; jne 1b
//   movl $0x01000000,0xfee00310; movl $0x4040,0xfee00300 (fixed IPI, vector 0x40)
//   2: cmpl $0xcafef00d,0x9004; jne 2b
//   mov $0x21,%al; out %al,$0xf4 (isa-debug-exit: status 67)
constexpr uint8_t kBspCode[] = { 0xC7, 0x05, 0xF0, 0x00, 0xE0, 0xFE, 0xFF, 0x01, 0x00, 0x00, 0xC7, 0x05, 0x10, 0x03,
    0xE0, 0xFE, 0x00, 0x00, 0x00, 0x01, 0xC7, 0x05, 0x00, 0x03, 0xE0, 0xFE, 0x00, 0x45, 0x00, 0x00, 0xC7, 0x05, 0x00,
    0x03, 0xE0, 0xFE, 0x08, 0x46, 0x00, 0x00, 0xC7, 0x05, 0x00, 0x03, 0xE0, 0xFE, 0x08, 0x46, 0x00, 0x00, 0x81, 0x3D,
    0x00, 0x90, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12, 0x75, 0xF4, 0xC7, 0x05, 0x10, 0x03, 0xE0, 0xFE, 0x00, 0x00, 0x00,
    0x01, 0xC7, 0x05, 0x00, 0x03, 0xE0, 0xFE, 0x40, 0x40, 0x00, 0x00, 0x81, 0x3D, 0x04, 0x90, 0x00, 0x00, 0x0D, 0xF0,
    0xFE, 0xCA, 0x75, 0xF4, 0xB0, 0x21, 0xE6, 0xF4 };

void write_private(Machine& m, uint64_t gpa, std::span<uint8_t const> bytes)
{
    REQUIRE(m.memory().write(Spa(SevRuntime::kGuestRamBase + gpa), bytes, mmu::KeyId::slot(m.sev()->asid())).has_value());
}

uint32_t read_private32(Machine& m, uint64_t gpa)
{
    uint8_t b[4];
    REQUIRE(m.memory().read(Spa(SevRuntime::kGuestRamBase + gpa), b, mmu::KeyId::slot(m.sev()->asid())).has_value());
    return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
}

vmm::CpuidEntry leaf1(vmm::Vcpu const& v)
{
    for (auto const& e : v.cpuid_entries())
        if (e.function == 1)
            return e;
    FAIL("no CPUID leaf 1");
    return {};
}

} // namespace

TEST_CASE("sev machine: -smp 2: INIT-SIPI-SIPI starts the AP from encrypted memory; its LAPIC, CPUID and IPIs are its own",
    "[sev][run][smp]")
{
    auto c = sev_config();
    c.smp = 2;
    c.max_instructions = 20'000'000; // an AP that never starts ends the run instead of hanging it
    auto m = make(std::move(c));
    auto* sev = m->sev();
    REQUIRE(sev->vcpu_count() == 2);
    REQUIRE(m->vcpus().size() == 2);
    CHECK(m->vcpus()[0].sev() == &sev->vcpu(0));
    CHECK(m->vcpus()[1].sev() == &sev->vcpu(1));
    // The AP waits for its SIPI in INIT's state (real mode at F000:FFF0, RDX = CPUID 1 EAX).
    CHECK(m->lapic(1).waiting_for_sipi());
    CHECK_FALSE(m->lapic(0).waiting_for_sipi());
    auto const& ap = sev->vcpu(1).state();
    CHECK(ap.cs.selector == 0xF000);
    CHECK(ap.cs.base == 0xFFFF0000);
    CHECK(ap.rip == 0xFFF0);
    CHECK(ap.cr0 == 0x60000010);
    CHECK(sev->vcpu(1).gprs()[2] == leaf1(sev->vcpu(1)).eax);
    // Each vCPU's CPUID table (KVM_SET_CPUID2) has its own APIC ID; both count 2 processors.
    CHECK(leaf1(sev->vcpu(0)).ebx >> 24 == 0);
    CHECK(leaf1(sev->vcpu(1)).ebx >> 24 == 1);
    CHECK(((leaf1(sev->vcpu(0)).ebx >> 16) & 0xFF) == 2);

    write_private(*m, 0x8000, kApCode);
    write_private(*m, 0x8A00, kApGate);
    write_private(*m, 0x20000, kBspCode);
    sev->vcpu(0).state().rip = 0x20000;
    auto out = m->run();
    INFO(out.message);
    CHECK(out.reason == RunOutcome::Reason::DebugExit);
    CHECK(out.exit_status == 67);
    // What the AP wrote, with the guest's key: its marker, the IPI handler's word, its LAPIC's
    // ID register (APIC ID 1 in bits 31:24: the MMIO exit went to its own LAPIC) and its CPUID.
    CHECK(read_private32(*m, 0x9000) == 0x12345678);
    CHECK(read_private32(*m, 0x9004) == 0xCAFEF00D);
    CHECK(read_private32(*m, 0x9008) == 0x01000000);
    CHECK(read_private32(*m, 0x900C) >> 24 == 1);
    // The hypervisor sees ciphertext there: the AP's real-mode and protected-mode writes were private.
    Bytes seen(4);
    REQUIRE(sev->read_guest_physical(0x9000, seen));
    CHECK(seen != Bytes { 0x78, 0x56, 0x34, 0x12 });
    // The AP went back to HLT after the IPI's handler, in protected mode with its own GDT.
    CHECK(m->vcpus()[1].halted());
    CHECK(sev->vcpu(1).state().cs.selector == 0x08);
    CHECK(sev->vcpu(1).state().rip == 0x805D);
    CHECK(m->lapic(1).apic_id() == 1);
    // IA32_APIC_BASE as each vCPU reads it: its LAPIC's, the BSP flag only on vCPU 0.
    CHECK(sev->vcpu(0).apic_base() == m->lapic(0).apic_base_msr());
    CHECK(sev->vcpu(1).apic_base() == m->lapic(1).apic_base_msr());
    CHECK((sev->vcpu(0).apic_base() & 0x100) != 0);
    CHECK((sev->vcpu(1).apic_base() & 0x100) == 0);
}

// --- Linux kernels (bzImage, PVH vmlinux) through the same loader entry: the launch measures
// what load_kernel_image wrote, and `sevemu-owner measurement digest` (the program, run as an
// owner runs it) prints the digest the firmware signs in the attestation report.
namespace {

std::string write_bytes(std::string const& name, Bytes const& b)
{
    auto p = (work_dir() / name).string();
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<char const*>(b.data()), std::streamsize(b.size()));
    return p;
}

// `sevemu-owner measurement digest` as a guest owner runs it; its one line of hex.
std::string owner_digest(std::string const& args)
{
    std::string cmd = std::string(SEVEMU_OWNER_BIN) + " measurement digest " + args + " 2>&1";
    std::FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p);
    std::string out;
    char buf[256];
    while (std::fgets(buf, sizeof buf, p))
        out += buf;
    int status = ::pclose(p);
    INFO(cmd << "\n" << out);
    REQUIRE(status == 0);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
        out.pop_back();
    return out;
}

std::string quoted(std::string const& s) { return "'" + s + "'"; }

// Launches an SEV machine with this -kernel/-initrd/-append/-m and checks that the launch
// digest the firmware attests is the owner's: kernel_launch_digest() in-process and the
// sevemu-owner program; the HMAC verifies with the TIK.
void check_linux_launch(std::string const& kernel, std::string const& initrd, std::string const& append, uint64_t mem,
    LoadedKernel::Protocol protocol, uint32_t smp = 1)
{
    auto o = owner_session(0x1, "linux");
    auto c = with_session(o);
    c.smp = smp;
    c.kernel = kernel;
    c.initrd = initrd;
    c.append = append;
    c.memory_size = mem;
    auto m = make(c);
    auto* sev = m->sev();
    REQUIRE(m->linux_boot().has_value());
    CHECK_FALSE(m->multiboot().has_value());
    auto const& lb = *m->linux_boot();
    CHECK(lb.protocol == (protocol == LoadedKernel::Protocol::LinuxPvh ? LinuxBoot::Protocol::Pvh : LinuxBoot::Protocol::BzImage));
    // The guest is told the Linux E820 map over its own RAM, GPA [0, -m): ACPI region at the top.
    REQUIRE(m->memory_map().size() == 4);
    CHECK(m->memory_map()[3].base == mem - 0x10000);
    CHECK(m->memory_map()[3].type == 3);
    CHECK(lb.acpi_base == mem - 0x10000);
    // The entry state in the VMCB, guest EFER.SVME. A bzImage: 32-bit protected mode, paging
    // off. A vmlinux: not PVH (it cannot run encrypted) but startup_64 through the 64-bit boot
    // protocol — long mode on the loader's identity map at 0x9000, whose entries carry the C-bit.
    auto const& s = sev->vcpu().state();
    CHECK((s.efer & (1u << 12)) != 0);
    CHECK(s.cs.selector == 0x10);
    CHECK(s.ds.selector == 0x18);
    CHECK(s.rip == lb.entry.rip);
    CHECK(s.gdtr.base == 0x6000);
    CHECK(sev->vcpu().gprs()[cpu::RSI] == 0x7000);
    CHECK(lb.boot_info == 0x7000);
    bool vmlinux = protocol == LoadedKernel::Protocol::LinuxPvh;
    CHECK(lb.startup64 == vmlinux);
    if (vmlinux) {
        CHECK(s.cr0 == 0x80000011);
        CHECK(s.cr3 == 0x9000);
        CHECK(s.cr4 == 0x20);
        CHECK((s.efer & 0x500) == 0x500);
        CHECK(s.cs.attrib == 0xA9B);
        CHECK(sev->vcpu().gprs()[cpu::RBX] == 0);
        // The identity map in guest memory, read with the guest's key: PML4[0] → PDPT, PDPT[3]
        // → the fourth PD, whose last entry maps 4 GiB - 2 MiB; all with C-bit 51.
        auto q = [&](uint64_t gpa) {
            Bytes v(8);
            REQUIRE(m->memory().read(Spa(SevRuntime::kGuestRamBase + gpa), v, mmu::KeyId::slot(sev->asid())).has_value());
            uint64_t x = 0;
            for (int i = 7; i >= 0; --i)
                x = x << 8 | v[size_t(i)];
            return x;
        };
        uint64_t c = 1ull << 51;
        CHECK(q(0x9000) == (0xA003 | c));
        CHECK(q(0xA018) == (0xE003 | c));
        CHECK(q(0xEFF8) == (0xFFE00083 | c));
        CHECK(q(0xB000) == (0x83 | c));
        // The zero page's header: boot_flag, "HdrS", version 2.15.
        CHECK(q(0x7000 + 0x1FE) == (0xAA55 | uint64_t(0x53726448) << 32));
        CHECK((q(0x7000 + 0x206) & 0xFFFF) == 0x020F);
    } else {
        CHECK(s.cr0 == 0x11);
    }
    // Every measured range is the loader's, ascending, low memory first.
    REQUIRE_FALSE(sev->measured_ranges().empty());
    CHECK(sev->measured_ranges().front().gpa == 0);
    CHECK(sev->measured_ranges().front().size >= 0xA0000);
    CHECK(sev->measured_ranges() == m->boot_ranges());

    auto info = sev->query();
    REQUIRE(info.has_value());
    auto measurement = sev->launch_measurement();
    REQUIRE(measurement.has_value());
    auto digest = kernel_launch_digest(KernelLaunch { mem, kernel, initrd, append, smp, 51 });
    REQUIRE(digest.has_value());
    CHECK(digest->ranges == sev->measured_ranges());
    auto ok = owner::verify_measurement(o.session.keys.tik, *measurement, version_of(*info), 0x1, digest->digest);
    INFO((ok ? std::string() : ok.error().message));
    CHECK(ok.has_value());
    owner::Nonce128 mnonce {};
    mnonce[0] = 0x5A;
    auto cap = sev->capabilities();
    REQUIRE(cap.has_value());
    auto pek = firmware::SevCert::parse(std::span(cap->cert_chain).first(firmware::kSevCertSize));
    REQUIRE(pek.has_value());
    auto report = sev->attestation_report(mnonce);
    REQUIRE(report.has_value());
    auto verified = owner::verify_attestation_report(*report, *pek, mnonce);
    REQUIRE(verified.has_value());
    CHECK(verified->launch_digest == digest->digest);
    // The owner's program, from the same command line.
    std::string args = fmt::format("-m {}M --kernel {}", mem >> 20, quoted(kernel));
    if (!initrd.empty())
        args += " --initrd " + quoted(initrd);
    args += " --append " + quoted(append);
    if (smp != 1)
        args += fmt::format(" --smp {}", smp);
    CHECK(owner_digest(args) == to_hex(verified->launch_digest));
    // Another command line or another vCPU count (the MADT) is another digest.
    auto other = kernel_launch_digest(KernelLaunch { mem, kernel, initrd, append + " quiet", smp });
    REQUIRE(other.has_value());
    CHECK(other->digest != digest->digest);
    uint32_t other_smp = smp == 1 ? 2 : 1;
    auto two = kernel_launch_digest(KernelLaunch { mem, kernel, initrd, append, other_smp });
    REQUIRE(two.has_value());
    CHECK(two->digest != digest->digest);
    if (smp == 1)
        CHECK(owner_digest(args + " --smp 2") == to_hex(two->digest));
    // Another C-bit (EPYC-Rome's 47) is another vmlinux digest (its page tables are measured),
    // and the same bzImage digest.
    auto rome = kernel_launch_digest(KernelLaunch { mem, kernel, initrd, append, smp, 47 });
    REQUIRE(rome.has_value());
    CHECK((rome->digest != digest->digest) == vmlinux);
    CHECK(owner_digest(args + " --cpu EPYC-Rome") == to_hex(rome->digest));
    // One hypervisor vCPU per -smp vCPU; the APs wait for their SIPI in INIT's state.
    REQUIRE(sev->vcpu_count() == smp);
    for (uint32_t i = 1; i < smp; ++i) {
        CHECK(m->lapic(i).waiting_for_sipi());
        CHECK(sev->vcpu(i).state().rip == 0xFFF0);
        CHECK(sev->vcpu(i).state().cs.selector == 0xF000);
    }
}

} // namespace

TEST_CASE("sev machine: a synthetic bzImage's launch digest is sevemu-owner's", "[sev][linux]")
{
    auto kernel = write_bytes("bzImage", test::synthetic_bzimage());
    Bytes initrd(5000);
    for (size_t i = 0; i < initrd.size(); ++i)
        initrd[i] = uint8_t(i ^ 0x5C);
    auto initrd_path = write_bytes("initrd.img", initrd);
    check_linux_launch(kernel, initrd_path, "console=ttyS0 panic=-1", 64ull << 20, LoadedKernel::Protocol::LinuxBzImage);
    check_linux_launch(kernel, "", "", 32ull << 20, LoadedKernel::Protocol::LinuxBzImage);
    // -smp 2: the MADT lists two LAPICs; the launch digest is still the owner's (plain SEV
    // measures no vCPU state).
    check_linux_launch(kernel, initrd_path, "console=ttyS0", 64ull << 20, LoadedKernel::Protocol::LinuxBzImage, 2);
}

TEST_CASE("sev machine: a synthetic PVH vmlinux's launch digest is sevemu-owner's", "[sev][linux]")
{
    auto kernel = write_bytes("vmlinux", test::synthetic_pvh());
    Bytes initrd(3 * 4096 + 1, 0xA7);
    auto initrd_path = write_bytes("pvh-initrd.img", initrd);
    check_linux_launch(kernel, initrd_path, "console=ttyS0", 64ull << 20, LoadedKernel::Protocol::LinuxPvh);
}

TEST_CASE("sev machine: an SEV vmlinux needs its ELF entry inside its segments and a C-bit in range", "[sev][linux]")
{
    // An SEV guest enters a vmlinux at e_entry (startup_64), not at the PVH note: an e_entry
    // outside the loaded segments is refused with one line, and so is a C-bit the tables cannot hold.
    auto bytes = test::synthetic_pvh();
    test::put_le(bytes, 24, 0xFFFFFFFF81000000ull, 8); // a virtual address: not in the segments
    auto kernel = write_bytes("vmlinux-bad-entry", bytes);
    auto bad = kernel_launch_digest(KernelLaunch { 64ull << 20, kernel, "", "", 1, 51 });
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().message.find("e_entry 0xffffffff81000000, startup_64") != std::string::npos);
    auto good = write_bytes("vmlinux-good", test::synthetic_pvh());
    auto cbit = kernel_launch_digest(KernelLaunch { 64ull << 20, good, "", "", 1, 64 });
    REQUIRE_FALSE(cbit.has_value());
    CHECK(cbit.error().message.find("C-bit position 64 is not between 32 and 63") != std::string::npos);
}

TEST_CASE("sev machine: Debian's bzImage and vmlinux launch digests are sevemu-owner's", "[sev][linux]")
{
    std::string dir = LINUX_ASSETS;
    if (!fs::exists(dir + "/bzImage") || !fs::exists(dir + "/vmlinux") || !fs::exists(dir + "/initramfs.cpio.gz")) {
        WARN("SKIPPED: Debian's kernel assets are absent in " << dir << " (run scripts/linux-assets.sh)");
        return;
    }
    check_linux_launch(dir + "/bzImage", dir + "/initramfs.cpio.gz", "console=ttyS0", 256ull << 20,
        LoadedKernel::Protocol::LinuxBzImage);
    check_linux_launch(dir + "/vmlinux", dir + "/initramfs.cpio.gz", "console=ttyS0", 256ull << 20,
        LoadedKernel::Protocol::LinuxPvh);
}
