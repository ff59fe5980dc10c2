/* Header shim for ringpoll-native-typecheck (tests/native/): the part of AIX's
 * <sys/pollset.h> that aix/pollset_poller.h's NativePollsetSys uses, written from the
 * pollset_create / pollset_ctl / pollset_poll manual pages (AIX 5.3 and later).
 * struct pollfd comes from <sys/poll.h>, whose layout (int fd; short events; short
 * revents) AIX shares with Linux. Declarations only: the target compiles and never links
 * or runs. */
#pragma once

#include <sys/poll.h>

typedef int pollset_t;

struct poll_ctl {
  short cmd;    /* PS_ADD, PS_MOD or PS_DELETE */
  short events; /* POLLIN, POLLOUT, ... (PS_MOD ORs them into the current set) */
  int fd;
};

#define PS_ADD 0
#define PS_MOD 1
#define PS_DELETE 2

#ifdef __cplusplus
extern "C" {
#endif
pollset_t pollset_create(int maxfd);
int pollset_destroy(pollset_t ps);
int pollset_ctl(pollset_t ps, struct poll_ctl* pollctl_array, int array_length);
int pollset_query(pollset_t ps, struct pollfd* pollfd_query);
int pollset_poll(pollset_t ps, struct pollfd* polldata_array, int array_length, int timeout);
#ifdef __cplusplus
}
#endif
