/* Header shim for ringpoll-native-typecheck (tests/native/): the part of <sys/event.h>
 * that kqueue/kqueue_poller.h's NativeKqueueSys uses, written from FreeBSD's kqueue(2)
 * manual page (FreeBSD 12 and later: 64-bit data and ext[4]). Declarations only: the
 * target compiles and never links or runs, so nothing here needs a BSD kernel. */
#pragma once

#include <stdint.h>
#include <time.h>

struct kevent {
  uintptr_t ident;      /* identifier of the event source (here a descriptor) */
  short filter;         /* EVFILT_* */
  unsigned short flags; /* EV_* actions and returned flags */
  unsigned int fflags;  /* filter-specific flags (NOTE_*) */
  int64_t data;         /* filter-specific data; the errno with EV_ERROR */
  void* udata;          /* opaque user data, passed through unchanged */
  uint64_t ext[4];      /* extensions; ext[2] and ext[3] are the user's */
};

/* Filters. */
#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EVFILT_USER (-11)

/* Actions. */
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ENABLE 0x0004
#define EV_DISABLE 0x0008
/* Flags. */
#define EV_ONESHOT 0x0010
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040
#define EV_DISPATCH 0x0080
/* Returned values. */
#define EV_ERROR 0x4000
#define EV_EOF 0x8000

/* EVFILT_USER: fire the event. */
#define NOTE_TRIGGER 0x01000000

#define EV_SET(kevp, a, b, c, d, e, f) \
  do {                                 \
    struct kevent* ev_ = (kevp);       \
    ev_->ident = (a);                  \
    ev_->filter = (b);                 \
    ev_->flags = (c);                  \
    ev_->fflags = (d);                 \
    ev_->data = (e);                   \
    ev_->udata = (f);                  \
    ev_->ext[0] = 0;                   \
    ev_->ext[1] = 0;                   \
    ev_->ext[2] = 0;                   \
    ev_->ext[3] = 0;                   \
  } while (0)

#ifdef __cplusplus
extern "C" {
#endif
int kqueue(void);
int kevent(int kq, const struct kevent* changelist, int nchanges, struct kevent* eventlist,
           int nevents, const struct timespec* timeout);
#ifdef __cplusplus
}
#endif
