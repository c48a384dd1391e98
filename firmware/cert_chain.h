// sevemu — the SEV platform certificate chain (AMD-ASPFW sev_cert.c sev_cert_validate; virtee/sev certs):
//
//     ARK (self-signed) -> ASK -> CEK -> PEK <- OCA (self-signed)
//                                        PEK -> PDH
//
// Every link is checked with the firmware's own rules (sev_cert_validate for SEV certificates,
// AmdCert::verify for the AMD keys), and a failure names the link, so a guest owner learns which
// certificate the platform (or someone in between) got wrong.
#pragma once

#include "base/result.h"
#include "firmware/amd_cert.h"
#include "firmware/sev_cert.h"

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace sevemu::firmware {

enum class ChainLink : uint8_t {
    ARK,     // ARK self-signature (and its usage)
    ARK_ASK, // ASK signed by the ARK
    ASK_CEK, // CEK signed by the ASK
    OCA,     // OCA self-signature
    CEK_PEK, // PEK signed by the CEK
    OCA_PEK, // PEK signed by the OCA
    PEK_PDH, // PDH signed by the PEK
    PDH,     // the PDH's own key (usage PDH, ECDH, P-384)
};
std::string_view chain_link_name(ChainLink);

struct ChainError {
    ChainLink link;
    CertError error;
    std::string message() const; // e.g. "ASK -> CEK: signature does not verify"
};

struct SevChain {
    std::optional<AmdCert> ark;
    std::optional<AmdCert> ask;
    std::optional<SevCert> cek;
    SevCert oca;
    SevCert pek;
    SevCert pdh;
};

struct ChainReport {
    bool amd_rooted { false };                 // ARK -> ASK -> CEK -> PEK checked
    std::optional<std::string_view> amd_product; // the ARK is one of AMD's published roots
};

// Checks OCA -> PEK -> PDH always, and ARK -> ASK -> CEK -> PEK when all three AMD-side
// certificates are present (`require_amd` makes their absence an error of link ARK).
// Checks run root first, so the first failure reported is the one nearest the root.
Result<ChainReport, ChainError> verify_chain(SevChain const&, bool require_amd = true);

} // namespace sevemu::firmware
