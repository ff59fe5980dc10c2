#pragma once
// Windows build only (iocp/compat): the POSIX header's names come from Winsock
// (sockaddr_in, inet_pton/inet_ntop, getaddrinfo, TCP_NODELAY ...).
#include "sys/socket.h"
