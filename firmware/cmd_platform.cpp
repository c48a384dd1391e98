// sevemu — platform commands: INIT, INIT_EX, SHUTDOWN, PLATFORM_RESET, PLATFORM_STATUS, PEK_GEN,
// PEK_CSR, PEK_CERT_IMPORT, PDH_CERT_EXPORT, PDH_GEN, DF_FLUSH, GET_ID, NOP (SEV-KM API 55766
// chapter 5 "Platform management"; AMD-ASPFW sev_mcmd.c, sev_plat.c).
#include "firmware/cmd_util.h"
#include "firmware/firmware.h"
#include "firmware/platform_store.h"
#include "firmware/sev_cert.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace sevemu::firmware {

namespace {

Result<CertSigner, Status> signer_from(Bytes const& priv, SevUsage usage, SevAlgo algo)
{
    auto key = p384_from_private(priv);
    if (!key)
        return make_unexpected(Status::HWERROR_PLATFORM);
    return CertSigner { usage, algo, std::move(*key) };
}

// A fresh firmware key pair and its certificate (OCA, PEK: ECDSA-SHA256; PDH: ECDH-SHA256; all
// P-384, as AMD-ASPFW sev_plat.c generates them).
Result<std::pair<PKey, SevCert>, Status> new_key(FirmwareParams const& p, SevUsage usage, SevAlgo algo)
{
    auto key = p384_generate();
    if (!key)
        return make_unexpected(Status::HWERROR_PLATFORM);
    auto cert = SevCert::make_ec(p.api_major, p.api_minor, usage, algo, key->get());
    if (!cert)
        return make_unexpected(Status::HWERROR_PLATFORM);
    return std::pair<PKey, SevCert> { std::move(*key), std::move(*cert) };
}

Result<Bytes, Status> scalar_of(PKey const& key)
{
    auto s = p384_private_scalar(key.get());
    if (!s)
        return make_unexpected(Status::HWERROR_PLATFORM);
    return std::move(*s);
}

} // namespace

// Generates the requested keys on a copy of the persistent state; nothing is committed here.
Result<PersistentState, Status> Firmware::generate_oca_pek_pdh(PersistentState st, bool new_oca, bool new_pek, bool new_pdh)
{
    if (new_oca) {
        // A self-owned platform: the firmware's own OCA signs its PEK (AMD-ASPFW sev_mcmd.c sev_mcmd_init_common).
        auto [key, cert] = TRY(new_key(m_params, SevUsage::OCA, SevAlgo::ECDSA_SHA256));
        CertSigner self { SevUsage::OCA, SevAlgo::ECDSA_SHA256, std::move(key) };
        if (!cert.sign(0, self))
            return make_unexpected(Status::HWERROR_PLATFORM);
        st.ext_owned = false;
        st.oca_priv = TRY(scalar_of(self.key));
        st.oca_cert = cert.serialize();
    }
    if (new_pek) {
        auto [key, cert] = TRY(new_key(m_params, SevUsage::PEK, SevAlgo::ECDSA_SHA256));
        // sig1 by the OCA (when the firmware holds its key), sig2 by the CEK (AMD-ASPFW sev_plat.c; as in
        // virtee/sev tests/naples, tests/rome pek.cert).
        if (!st.oca_priv.empty()) {
            auto oca = TRY(signer_from(st.oca_priv, SevUsage::OCA, SevAlgo::ECDSA_SHA256));
            if (!cert.sign(0, oca))
                return make_unexpected(Status::HWERROR_PLATFORM);
        }
        CertSigner cek { SevUsage::CEK, SevAlgo::ECDSA_SHA256, nullptr };
        auto cek_key = derive_cek(m_store.cuk());
        if (!cek_key)
            return make_unexpected(Status::HWERROR_PLATFORM);
        cek.key = std::move(*cek_key);
        if (!cert.sign(1, cek))
            return make_unexpected(Status::HWERROR_PLATFORM);
        st.pek_priv = TRY(scalar_of(key));
        st.pek_cert = cert.serialize();
    }
    if (new_pdh) {
        auto [key, cert] = TRY(new_key(m_params, SevUsage::PDH, SevAlgo::ECDH_SHA256));
        auto pek = TRY(signer_from(st.pek_priv, SevUsage::PEK, SevAlgo::ECDSA_SHA256));
        if (!cert.sign(0, pek))
            return make_unexpected(Status::HWERROR_PLATFORM);
        st.pdh_priv = TRY(scalar_of(key));
        st.pdh_cert = cert.serialize();
    }
    return st;
}

// Writes the sealed NV image where INIT/INIT_EX said the NV area is. A failed write leaves the
// in-memory state unchanged (callers commit only after this succeeds).
Result<void, Status> Firmware::save_persistent(PersistentState const& st)
{
    auto image = nv_seal(st, m_store.cuk());
    if (!image)
        return make_unexpected(Status::HWERROR_PLATFORM);
    if (m_nv_location == NvLocation::Dram)
        return write_dram(m_nv_paddr, *image, mmu::KeyId::none());
    if (!m_store.write_nv(*image))
        return make_unexpected(Status::HWERROR_PLATFORM);
    return {};
}

// ---------------------------------------------------------------------------------------------
// INIT (0x01) / INIT_EX (0x0D): AMD-ASPFW sev_mcmd_init_common; SEV API 55766, INIT / INIT_EX.

Result<void, Status> Firmware::cmd_init(InitBuf& b)
{
    note("flags=" + hex(b.flags));
    TRY(check_platform_state());
    if (b.reserved_004 != 0)
        return make_unexpected(Status::INVALID_CONFIG);
    return init_common(b.flags, b.tmr_paddr, b.tmr_length, NvLocation::Spi, 0);
}

Result<void, Status> Firmware::cmd_init_ex(InitExBuf& b)
{
    note("flags=" + hex(b.flags) + " nv=" + hex(b.nv_paddr));
    TRY(check_platform_state());
    if (b.reserved_014 != 0 || (b.flags & ~kInitFlagEs))
        return make_unexpected(Status::INVALID_CONFIG);
    if (b.length != kInitExLength)
        return make_unexpected(Status::INVALID_LEN);
    if (b.nv_paddr == 0) // "use the SPI flash", like INIT
        return init_common(b.flags, b.tmr_paddr, b.tmr_length, NvLocation::Spi, 0);
    if (b.nv_paddr & 0xFFF)
        return make_unexpected(Status::INVALID_ADDRESS);
    TRY(check_range(b.nv_paddr, b.nv_length)); // with the host's length, then the length itself (AMD-ASPFW)
    if (b.nv_length != kNvSize)
        return make_unexpected(Status::INVALID_LEN);
    return init_common(b.flags, b.tmr_paddr, b.tmr_length, NvLocation::Dram, b.nv_paddr);
}

Result<void, Status> Firmware::init_common(uint32_t flags, uint64_t tmr_paddr, uint32_t tmr_len, NvLocation nv, uint64_t nv_paddr)
{
    // Step 2 (memory encryption on all UMCs, SME on all cores) is always true here: sevemu's
    // memory controller always encrypts (QUIRKS.md).
    // Step 3: only the ES flag is defined; ES needs a part that has SEV-ES.
    if ((flags & ~kInitFlagEs) || ((flags & kInitFlagEs) && !m_params.es_supported))
        return make_unexpected(Status::INVALID_CONFIG);

    // Step 5: load the persistent store. A damaged image is refused with SECURE_DATA_INVALID and
    // erased, so that the driver's one retry starts from an empty store (AMD-ASPFW init_common).
    Bytes image;
    if (nv == NvLocation::Dram) {
        image.resize(kNvSize);
        TRY(read_dram(nv_paddr, image, mmu::KeyId::none()));
    } else {
        auto r = m_store.read_nv();
        if (!r)
            return make_unexpected(Status::HWERROR_PLATFORM);
        image = std::move(*r);
        if (image.size() != kNvImageSize)
            image.assign(kNvImageSize, 0); // a truncated file is damaged data, not an I/O error
    }
    auto loaded = nv_unseal(image, m_store.cuk());
    if (!loaded) {
        Bytes erased = nv_erased_image();
        if (nv == NvLocation::Dram)
            (void)write_dram(nv_paddr, erased, mmu::KeyId::none());
        else
            (void)m_store.erase_nv();
        note("(NV store damaged, erased)");
        return make_unexpected(Status::SECURE_DATA_INVALID);
    }

    // Step 12, checked before anything changes: the SEV-ES TMR is 1 MiB, 1 MiB aligned, in DRAM
    // and not inside the NV buffer (the firmware would otherwise keep VMSA checksums where the
    // host can write them).
    if (flags & kInitFlagEs) {
        if (tmr_paddr & (kTmrSize - 1))
            return make_unexpected(Status::INVALID_ADDRESS);
        if (tmr_len != kTmrSize)
            return make_unexpected(Status::INVALID_LEN);
        if (!check_range(tmr_paddr, kTmrSize))
            return make_unexpected(Status::INVALID_CONFIG); // TMR over MMIO / not DRAM
        if (nv == NvLocation::Dram && tmr_paddr < nv_paddr + kNvSize && nv_paddr < tmr_paddr + kTmrSize)
            return make_unexpected(Status::INVALID_ADDRESS);
    }

    // Steps 6-9: the CEK, then whatever of OCA -> PEK -> PDH is missing. A new OCA forces a new
    // PEK, a new PEK a new PDH (each signs the next).
    auto cek = derive_cek(m_store.cuk());
    if (!cek)
        return make_unexpected(Status::HWERROR_PLATFORM);
    PersistentState st = loaded->value_or(PersistentState {});
    bool new_oca = !st.has_oca();
    bool new_pek = new_oca || !st.has_pek();
    bool new_pdh = new_pek || !st.has_pdh();
    NvLocation saved_location = m_nv_location;
    uint64_t saved_paddr = m_nv_paddr;
    m_nv_location = nv;
    m_nv_paddr = nv_paddr;
    if (new_oca || new_pek || new_pdh) {
        auto gen = generate_oca_pek_pdh(std::move(st), new_oca, new_pek, new_pdh);
        Result<void, Status> saved = gen ? save_persistent(*gen) : Result<void, Status>(make_unexpected(gen.error()));
        if (!saved) {
            m_nv_location = saved_location;
            m_nv_paddr = saved_paddr;
            return make_unexpected(saved.error());
        }
        st = std::move(*gen);
        note(std::string("(generated") + (new_oca ? " OCA" : "") + (new_pek ? " PEK" : "") + (new_pdh ? " PDH" : "") + ")");
    }

    // Commit.
    m_persistent = std::move(st);
    m_cek = std::move(*cek);
    m_config = flags;
    m_tmr_paddr = (flags & kInitFlagEs) ? tmr_paddr : 0;
    m_tmr_valid = (flags & kInitFlagEs) != 0;
    // Step 11: every ASID is invalid and dirty until a DF_FLUSH after WBINVD (Linux does
    // WBINVD + DF_FLUSH right after INIT).
    for (uint32_t a = 1; a < m_asids.size(); ++a)
        set_asid(a, AsidState::Dirty, 0, false);
    transition(PlatformState::INIT);
    state_trace("asids 1.." + std::to_string(m_asids.size() - 1) + ": dirty until WBINVD + DF_FLUSH (INIT)");
    return {};
}

// SHUTDOWN (0x02): any state; destroys every guest (AMD-ASPFW sev_mcmd.c; SEV API 55766, SHUTDOWN).
Result<void, Status> Firmware::cmd_shutdown()
{
    TRY(check_platform_state());
    for (auto& g : m_guests) {
        if (!g)
            continue;
        if (g->asid) {
            // An ASID that ran may have lines in the caches: dirty until WBINVD + DF_FLUSH.
            if (g->activation == Activation::Active) {
                set_asid(g->asid, AsidState::Dirty, 0);
            } else {
                set_asid(g->asid, AsidState::Clean, 0);
                (void)m_mc.key_slot_port().clear(g->asid);
            }
        }
        transition(*g, GuestState::UNINIT);
        g.reset();
    }
    m_guest_count = 0;
    m_persistent.wipe();
    m_cek.reset();
    m_config = 0;
    m_tmr_paddr = 0;
    m_tmr_valid = false;
    m_nv_location = NvLocation::Spi;
    m_nv_paddr = 0;
    transition(PlatformState::UNINIT);
    return {};
}

// PLATFORM_RESET / FACTORY_RESET (0x03): UNINIT only; erases the SPI store so the next INIT
// makes a new self-owned identity. An INIT_EX buffer is the host's and is not touched (AMD-ASPFW).
Result<void, Status> Firmware::cmd_platform_reset()
{
    TRY(check_platform_state());
    if (!m_store.erase_nv())
        return make_unexpected(Status::HWERROR_PLATFORM);
    return {};
}

// PLATFORM_STATUS (0x04): any state. UNINIT reports owner, ES and guest count as 0.
Result<void, Status> Firmware::cmd_platform_status(PlatformStatusBuf& b)
{
    TRY(check_platform_state());
    b = PlatformStatusBuf {};
    b.api_major = m_params.api_major;
    b.api_minor = m_params.api_minor;
    b.build = m_params.build;
    b.state = uint8_t(m_state);
    if (m_state != PlatformState::UNINIT) {
        b.owner = m_persistent.ext_owned ? kStatusOwnerExternal : 0;
        b.config = (m_config & kInitFlagEs) ? kStatusConfigEs : 0;
        b.guest_count = m_guest_count;
    }
    note("state=" + std::string(platform_state_name(m_state)));
    return {};
}

// PEK_GEN (0x05): INIT only; a new self-owned identity (OCA, PEK, PDH).
Result<void, Status> Firmware::cmd_pek_gen()
{
    TRY(check_platform_state());
    auto st = TRY(generate_oca_pek_pdh(PersistentState {}, true, true, true));
    TRY(save_persistent(st));
    m_persistent = std::move(st);
    return {};
}

// PEK_CSR (0x06): the PEK body with both signature slots empty, for an owner's OCA to sign.
Result<void, Status> Firmware::cmd_pek_csr(PekCsrBuf& b)
{
    TRY(check_platform_state());
    if (b.csr_length < kSevCertSize) {
        b.csr_length = kSevCertSize; // length query
        return make_unexpected(Status::INVALID_LEN);
    }
    auto pek = SevCert::from_bytes(m_persistent.pek_cert);
    if (!pek)
        return make_unexpected(Status::HWERROR_PLATFORM);
    pek->clear_slot(0);
    pek->clear_slot(1);
    TRY(write_dram(b.csr_paddr, pek->serialize(), mmu::KeyId::none()));
    b.csr_length = kSevCertSize;
    return {};
}

// PEK_CERT_IMPORT (0x07): take ownership with an owner-signed PEK and the owner's OCA (AMD-ASPFW sev_mcmd.c;
// SEV API 55766, PEK_CERT_IMPORT).
Result<void, Status> Firmware::cmd_pek_cert_import(PekCertImportBuf& b)
{
    TRY(check_platform_state());
    if (m_persistent.ext_owned)
        return make_unexpected(Status::ALREADY_OWNED);
    if (b.pek_cert_length != kSevCertSize || b.oca_cert_length != kSevCertSize)
        return make_unexpected(Status::INVALID_LEN);
    Bytes pek_bytes(kSevCertSize), oca_bytes(kSevCertSize);
    TRY(read_dram(b.pek_cert_paddr, pek_bytes, mmu::KeyId::none()));
    TRY(read_dram(b.oca_cert_paddr, oca_bytes, mmu::KeyId::none()));
    auto oca = SevCert::from_bytes(oca_bytes);
    auto pek = SevCert::from_bytes(pek_bytes);
    if (!oca || !pek)
        return make_unexpected(Status::INVALID_CERTIFICATE);
    // The OCA must be self-signed and the PEK signed by it: otherwise anyone could claim the
    // platform with a certificate they cannot back with a key.
    if (auto r = sev_cert_validate(*oca, *oca); !r)
        return make_unexpected(cert_status(r.error()));
    if (auto r = sev_cert_validate(*pek, *oca); !r)
        return make_unexpected(cert_status(r.error()));
    // The signed PEK must be this platform's PEK: an owner cannot substitute a key whose private
    // half the firmware does not hold.
    auto current = SevCert::from_bytes(m_persistent.pek_cert);
    if (!current)
        return make_unexpected(Status::HWERROR_PLATFORM);
    if (!std::equal(pek->body().begin(), pek->body().end(), current->body().begin()))
        return make_unexpected(Status::INVALID_CERTIFICATE);
    // Keep the CEK's signature: it moves into the first empty slot of the imported PEK.
    std::optional<unsigned> cek_slot;
    for (unsigned s = 0; s < 2; ++s) {
        if (current->sig_usage_code(s) == uint32_t(SevUsage::CEK))
            cek_slot = s;
    }
    auto free_slot = pek->first_empty_slot();
    if (!cek_slot || !free_slot)
        return make_unexpected(Status::INVALID_CERTIFICATE);
    pek->copy_slot_from(*current, *cek_slot, *free_slot);

    PersistentState st = m_persistent;
    secure_zero(st.oca_priv.data(), st.oca_priv.size());
    st.oca_priv.clear();
    st.ext_owned = true;
    st.oca_cert = oca->serialize();
    st.pek_cert = pek->serialize();
    st = TRY(generate_oca_pek_pdh(std::move(st), false, false, true));
    TRY(save_persistent(st));
    m_persistent = std::move(st);
    return {};
}

// PDH_CERT_EXPORT (0x08): the PDH and the chain PEK || OCA || CEK (CEK unsigned; AMD-ASPFW sev_mcmd.c; SEV
// API 55766, PDH_CERT_EXPORT).
Result<void, Status> Firmware::cmd_pdh_cert_export(PdhCertExportBuf& b)
{
    TRY(check_platform_state());
    constexpr uint32_t kChain = 3 * kSevCertSize;
    if (b.pdh_cert_length < kSevCertSize || b.certs_length < kChain) {
        b.pdh_cert_length = kSevCertSize;
        b.certs_length = kChain;
        return make_unexpected(Status::INVALID_LEN);
    }
    TRY(check_range(b.pdh_cert_paddr, kSevCertSize));
    TRY(check_range(b.certs_paddr, kChain));
    auto cek = SevCert::make_ec(m_params.api_major, m_params.api_minor, SevUsage::CEK, SevAlgo::ECDSA_SHA256, m_cek.get());
    if (!cek)
        return make_unexpected(Status::HWERROR_PLATFORM);
    Bytes chain = m_persistent.pek_cert;
    chain.insert(chain.end(), m_persistent.oca_cert.begin(), m_persistent.oca_cert.end());
    Bytes cek_bytes = cek->serialize();
    chain.insert(chain.end(), cek_bytes.begin(), cek_bytes.end());
    TRY(write_dram(b.pdh_cert_paddr, m_persistent.pdh_cert, mmu::KeyId::none()));
    TRY(write_dram(b.certs_paddr, chain, mmu::KeyId::none()));
    b.pdh_cert_length = kSevCertSize;
    b.certs_length = kChain;
    return {};
}

// PDH_GEN (0x09): a new PDH signed by the PEK; running guests' channels are unaffected.
Result<void, Status> Firmware::cmd_pdh_gen()
{
    TRY(check_platform_state());
    auto st = TRY(generate_oca_pek_pdh(m_persistent, false, false, true));
    TRY(save_persistent(st));
    m_persistent = std::move(st);
    return {};
}

// DF_FLUSH (0x0A): dirty ASIDs become clean where no cache still holds lines under their key
// (AMD-ASPFW sev_mcmd.c; SEV API 55766, DF_FLUSH). "WBINVD done" is observed, not told: the firmware asks the
// memory controller
// whether any page is still cached under the ASID's key — exactly what WBINVD on every core
// guarantees to clear (QUIRKS.md). If some are, the others are still cleaned and the command
// reports WBINVD_REQUIRED, as AMD-ASPFW does with its partial transition. AMD-ASPFW checks no platform state.
Result<void, Status> Firmware::cmd_df_flush()
{
    TRY(check_platform_state());
    uint32_t cleaned = 0, still_dirty = 0;
    for (uint32_t a = 1; a < m_asids.size(); ++a) {
        if (m_asids[a].state != AsidState::Dirty)
            continue;
        bool cached = a < m_mc.key_slot_count() && m_mc.key_has_cached_pages(mmu::KeyId::slot(a));
        if (cached) {
            ++still_dirty;
            continue;
        }
        set_asid(a, AsidState::Clean, 0, false);
        if (a < m_mc.key_slot_count())
            (void)m_mc.key_slot_port().clear(a); // the old guest's key leaves the slot
        ++cleaned;
    }
    note("cleaned=" + std::to_string(cleaned) + (still_dirty ? " still_dirty=" + std::to_string(still_dirty) : ""));
    if (cleaned)
        state_trace(std::to_string(cleaned) + " dirty asid(s) -> clean (DF_FLUSH)");
    if (still_dirty)
        return make_unexpected(Status::WBINVD_REQUIRED);
    return {};
}

// GET_ID (0x0C): 64 bytes per socket; sevemu models one socket (AMD-ASPFW sev_mcmd.c; SEV API 55766, GET_ID).
Result<void, Status> Firmware::cmd_get_id(GetIdBuf& b)
{
    TRY(check_platform_state());
    if (b.id_length < kGetIdSize) {
        b.id_length = kGetIdSize;
        return make_unexpected(Status::INVALID_LEN);
    }
    auto id = chip_id_from_cuk(m_store.cuk());
    if (!id)
        return make_unexpected(Status::HWERROR_PLATFORM);
    TRY(write_dram(b.id_paddr, *id, mmu::KeyId::none()));
    b.id_length = kGetIdSize;
    return {};
}

Result<void, Status> Firmware::cmd_nop()
{
    TRY(check_platform_state());
    return {};
}

} // namespace sevemu::firmware
