#pragma once
// tuning::Config → ProxySettings: the [proxy] listeners and pools plus the socket,
// timeout and limit keys the proxy uses. The config loader already checked every address
// and pool reference; this only converts (and still says what is wrong if a caller hands
// it a Config that was not validated).
#include <string>

#include "apps/proxy/settings.h"
#include "tuning/config.h"

namespace ringpoll::proxy {

bool settings_from_config(const tuning::Config& cfg, ProxySettings* out, std::string* why);

}  // namespace ringpoll::proxy
