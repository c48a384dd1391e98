// Checking LAUNCH_MEASURE's output (SEV-KM API 55766 "LAUNCH_MEASURE"; AMD-ASPFW sev_mcmd.c): the
// owner recomputes the HMAC from the launch digest it expects, so a platform that loaded other
// code (or used other keys) is detected before any secret is released.
#include "tools/sevemu-owner/owner.h"

#include <algorithm>

namespace sevemu::owner {

using namespace sevemu::firmware;

OwnerResult<LaunchMeasurement> parse_measurement(std::span<const uint8_t> bytes)
{
    if (bytes.size() != kMeasurementSize)
        return make_unexpected(OwnerError { "measurement must be " + std::to_string(kMeasurementSize)
            + " bytes (MEASURE || MNONCE), got " + std::to_string(bytes.size()) });
    LaunchMeasurement m;
    std::copy_n(bytes.begin(), 32, m.measure.begin());
    std::copy_n(bytes.begin() + 32, 16, m.mnonce.begin());
    return m;
}

Mac256 expected_measurement(Key128 const& tik, PlatformVersion v, uint32_t policy, Sha256Digest const& launch_digest,
    Nonce128 const& mnonce)
{
    return launch_measure_mac(tik, v.api_major, v.api_minor, v.build, policy, launch_digest, mnonce);
}

OwnerResult<void> verify_measurement(Key128 const& tik, std::span<const uint8_t> measurement, PlatformVersion v,
    uint32_t policy, Sha256Digest const& launch_digest)
{
    auto m = TRY(parse_measurement(measurement));
    Mac256 expected = expected_measurement(tik, v, policy, launch_digest, m.mnonce);
    if (!equal_ct(expected, m.measure))
        return make_unexpected(OwnerError { "measurement does not match: expected " + to_hex(expected) + ", got "
            + to_hex(m.measure) + " (different launch digest, policy, firmware version or TIK)" });
    return {};
}

} // namespace sevemu::owner
