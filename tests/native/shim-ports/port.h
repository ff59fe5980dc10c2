/* Header shim for ringpoll-native-typecheck (tests/native/): the part of illumos/Solaris
 * <port.h> (with <sys/port.h>) that ports/ports_poller.h's NativePortsSys uses, written
 * from the port_create(3C), port_associate(3C), port_get(3C) and port_send(3C) manual
 * pages. Declarations only: the target compiles and never links or runs. */
#pragma once

#include <stdint.h>
#include <time.h>

/* illumos' own names for these types (<sys/types.h>, <sys/time_impl.h>). */
typedef unsigned int uint_t;
typedef unsigned short ushort_t;
typedef struct timespec timespec_t;

typedef struct port_event {
  int portev_events;       /* the events that fired (POLLIN, ...) or the user's value */
  ushort_t portev_source;  /* PORT_SOURCE_* */
  ushort_t portev_pad;     /* reserved */
  uintptr_t portev_object; /* the object: here a file descriptor */
  void* portev_user;       /* the user's cookie from port_associate / port_send */
} port_event_t;

#define PORT_SOURCE_AIO 1
#define PORT_SOURCE_TIMER 2
#define PORT_SOURCE_USER 3
#define PORT_SOURCE_FD 4
#define PORT_SOURCE_ALERT 5
#define PORT_SOURCE_MQ 6
#define PORT_SOURCE_FILE 7

#define PORT_ALERT_SET 0x01
#define PORT_ALERT_UPDATE 0x02

#ifdef __cplusplus
extern "C" {
#endif
int port_create(void);
int port_associate(int port, int source, uintptr_t object, int events, void* user);
int port_dissociate(int port, int source, uintptr_t object);
int port_send(int port, int events, void* user);
int port_sendn(int ports[], int errors[], uint_t nent, int events, void* user);
int port_get(int port, port_event_t* pe, timespec_t* timeout);
/* The timeout is not const in the documented prototype. */
int port_getn(int port, port_event_t list[], uint_t max, uint_t* nget, timespec_t* timeout);
int port_alert(int port, int flags, int events, void* user);
#ifdef __cplusplus
}
#endif
