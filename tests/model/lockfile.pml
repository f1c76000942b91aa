/*
 * lockfile.pml -- a Promela model of lockfile's locking protocol on a local
 * file system (DESIGN.md "Protocol"; README.md "How it works"), as
 * include/lockfile/lockfile.hpp implements it.
 *
 *   spin -a lockfile.pml            the protocol as implemented
 *   spin -DNAIVE -a lockfile.pml    the naive reclaim: compare, then unlink,
 *                                   without the inode's flock
 *
 * tests/model/check.sh verifies the first exhaustively (3 processes) and
 * expects spin to find a counterexample in the second, so the model is known
 * to be able to fail.
 *
 * ---------------------------------------------------------------------------
 * The world
 * ---------------------------------------------------------------------------
 * - Inodes 1..MAXINODE. Each publication makes a fresh one (O_TMPFILE, then
 *   link). `path` is the inode the lock path names, or NONE. A link never
 *   names an inode again once the path has stopped naming it.
 * - `ver[i]`: the version of inode i's bytes. Only i's owner writes i (the
 *   record is published complete; renewal rewrites the heartbeat in place),
 *   and each write bumps the version, so "same bytes" is "same version".
 * - `owner[i]`: the process that published i (its ownerID).
 * - `flock_by[i]`: who holds flock(LOCK_EX) on inode i, or NOBODY. Each
 *   process opens its own descriptor, so flock excludes between them.
 * - An inode number is used again once nobody names or has the inode open
 *   (`gc`), as a file system does. Whoever compares an identity keeps the
 *   inode open (`seen` while judging and reclaiming, `mine` while holding and
 *   releasing), which pins its number, so reuse never fools an identity check.
 *   So MAXINODE = NPROC + 1 numbers suffice.
 *
 * Time is abstract. Any process may stall anywhere for as long as it likes
 * (interleaving), so a judge may always find the bytes it read stale:
 *   - if they are still the current bytes of the named inode, their owner
 *     did not renew for the whole threshold: it was paused (SIGSTOP, sleep,
 *     hung disk), or has crashed, or no longer holds the lock. This is the
 *     "pause past expiry": a holder whose lease expires so is marked
 *     `lapsed` at that moment (expire_if_current). It may resume later, and
 *     then renew, or learn that it lost;
 *   - if they were superseded by a renewal, they aged meanwhile: the holder
 *     renewed in time and nobody is marked (the reclaim will find the bytes
 *     changed).
 * A judge may also always find the lease held (and so may a judge that finds
 * the flock busy): that attempt ends, and the process may try again. This
 * covers every rule of detail::judge at once: lease age, unchanged-for-the-
 * threshold and alive-by-observation, invalid records, and the dead-owner
 * probe for a crashed owner.
 *
 * Crash: a process that stops forever is a stall, which interleaving already
 * covers. A crash does more than a stall only while the process holds a
 * flock: the kernel closes its descriptors and the flock goes (its lock file,
 * if any, stays). So a process may crash before any step it takes under a
 * flock (MAXCRASH in all); it takes no step after.
 *
 * ---------------------------------------------------------------------------
 * A process (proctype Proc) -- what it does, and the code it stands for
 * ---------------------------------------------------------------------------
 * Up to MAXATT passes of PIDLock::attempt's loop; each pass publishes once:
 *   1. publish (detail::publish, link() of a complete record): if the path
 *      is free it names a fresh inode owned by us, and we hold the lock
 *      (take_ownership: held() true).
 *   2. else EEXIST, and observe (detail::observe_file: open the path, fstat,
 *      read): the inode `seen` and its bytes `tv`.
 *   3. judge (detail::judge), a later step: held -> the pass ends; stale ->
 *      flock(LOCK_EX|LOCK_NB) on the opened inode in the same step (busy:
 *      the pass ends, "one retry").
 *   4. reclaim (remove_lock_file_if(seen, bytes == tv)): lstat the path,
 *      same inode? pread, the bytes judged? unlink the path; flock(LOCK_UN).
 *      Each its own step; a failed check skips to LOCK_UN. Then the next pass
 *      publishes again.
 * While holding: up to MAXRENEW renewals, and release at any time.
 *   - renewal (detail::renew, which takes no flock): lstat, does the path
 *     still name our inode? If not, `recheck_soon`: the first time the
 *     renewal fails, the second time in a row the lease is lost (held()
 *     false). If it does: pread (our ownerID: only we write our inode, so
 *     that check always passes) and pwrite of the heartbeat, one step:
 *     ver[mine]++.
 *   - release (PIDLock::release_impl): held() turns false first, then
 *     remove_lock_file_if(mine, ownerID is ours): flock (busy: sleep and
 *     retry, RELTRIES attempts, then the file is left to go stale), lstat
 *     and pread (folded: the ownerID is ours), unlink, LOCK_UN.
 *   A lost or released lock may be acquired again on a later pass.
 * With NAIVE, the reclaim takes no flock (and drops none): lstat, pread,
 * unlink. Release still takes its flock, which a naive reclaimer ignores.
 *
 * ---------------------------------------------------------------------------
 * The two properties
 * ---------------------------------------------------------------------------
 * (A) No unlink removes a lock file that was not judged stale: every unlink
 *     of the path removes the inode the unlinker judged stale (reclaim) or
 *     its own inode (release), never a fresh lock of someone else. The
 *     assertion in unlink_path: path == target.
 * (B) At most one holder whose lease has not expired. DESIGN.md guarantee 1
 *     excepts a holder that could not renew for the whole threshold, until it
 *     learns of the loss, and the model permits exactly that: a holder is
 *     `lapsed` from the expiry of its current bytes until it stops holding,
 *     or until one of its renewals writes its inode while the path still
 *     names it and no remover has already passed its checks on that inode
 *     (ghost `committed`): from then on every remover that judged older bytes
 *     finds them changed. A renewal that lands between a reclaimer's check
 *     and its unlink does not end the exception (README "How it works",
 *     Renew: the next renewal finds the path gone). The process Exclusion
 *     asserts UNEXPIRED_HOLDERS <= 1 in every reachable state.
 *
 * ---------------------------------------------------------------------------
 * Abstracted away
 * ---------------------------------------------------------------------------
 * - Time and clocks: see above. The stale threshold, heartbeat interval,
 *   clock skew, the threshold's max() of two configurations and the waiting
 *   lock's own observations only decide *when* a judge may call bytes stale;
 *   the model lets it do so whenever, which over-approximates all of them.
 * - The dead-owner probe (/proc, start time, pidfd): assumed never to call a
 *   live process dead; for a dead one it is a judge that finds its bytes
 *   stale at once, which the model allows anyway.
 * - Network file systems and DESIGN.md's claim-file path: not modelled. This
 *   is the local path, where every contender shares flock; the
 *   implementation takes it everywhere today (README "Network file systems:
 *   not yet").
 * - I/O errors (a failed renewal is retried; a stall covers it), invalid
 *   records, the O_CREAT|O_EXCL fallback, the parent directory, threads
 *   within a process, fork, waiting (inotify, pidfd), and writers outside
 *   the protocol (the renewal's ownerID check guards against those): none
 *   changes which inode an unlink removes. Only owners write their inode.
 * - Bounds: NPROC 3, MAXATT passes and MAXRENEW renewals per process
 *   (holding), RELTRIES, MAXCRASH. The search is exhaustive within them.
 */

#ifndef NPROC
#define NPROC 3
#endif
#ifndef MAXATT
#define MAXATT 2        /* passes of attempt's loop (publications) per process */
#endif
#ifndef MAXRENEW
#define MAXRENEW 2      /* renewals per holding */
#endif
#ifndef RELTRIES
#define RELTRIES 2      /* release: flock attempts before the file is left to go stale */
#endif
#ifndef MAXCRASH
#define MAXCRASH 1      /* crashes in all */
#endif

#define MAXINODE (NPROC + 1)   /* the path's, and one open by each process */
#define NONE 0
#define NOBODY 255

/* removal results (0: so far so good) */
#define REMOVED 1
#define VANISHED 2
#define CHANGED 3

byte path = NONE;                       /* the inode the lock path names */
byte ver[MAXINODE + 1];                 /* version of each inode's bytes */
byte owner[MAXINODE + 1] = NOBODY;      /* who published it */
byte flock_by[MAXINODE + 1] = NOBODY;   /* who holds flock(LOCK_EX) on it */

bool holder[NPROC];      /* believes it holds the lock: held() */
bool lapsed[NPROC];      /* ... but its lease expired meanwhile */
byte mine[NPROC];        /* the inode it holds (and keeps open) */
byte seen[NPROC];        /* the inode it opened to judge */
byte myflock[NPROC];     /* the inode whose flock it holds */
byte committed[NPROC];   /* ghost: passed the checks, about to unlink this inode */
byte crashes = 0;

#if NPROC != 3
#error "the macros below are written for NPROC == 3"
#endif
#define NOT_COMMITTED(i) (committed[0] != (i) && committed[1] != (i) && committed[2] != (i))
#define UNREFERENCED(i) ((i) != path && seen[0] != (i) && seen[1] != (i) && seen[2] != (i) && \
                         mine[0] != (i) && mine[1] != (i) && mine[2] != (i))
#define UNEXPIRED(p) (holder[p] && !lapsed[p])
#define UNEXPIRED_HOLDERS (UNEXPIRED(0) + UNEXPIRED(1) + UNEXPIRED(2))

#define FLOCK_FREE(i) (flock_by[i] == NOBODY)
#define TAKE_FLOCK(i) flock_by[i] = _pid; myflock[_pid] = i
#define UNLOCK(i) flock_by[i] = NOBODY; myflock[_pid] = NONE

/* The reclaim's flock; NAIVE leaves it out (release keeps its own). */
#ifdef NAIVE
#define RECLAIM_FLOCK_FREE(i) true
#define RECLAIM_TAKE_FLOCK(i) skip
#define RECLAIM_UNLOCK(i) skip
#else
#define RECLAIM_FLOCK_FREE(i) FLOCK_FREE(i)
#define RECLAIM_TAKE_FLOCK(i) TAKE_FLOCK(i)
#define RECLAIM_UNLOCK(i) UNLOCK(i)
#endif

/* A crash that is more than a stall: a process dies while it holds a flock
 * (or, NAIVE, is inside its reclaim), and the kernel drops the flock. It may
 * happen before any step taken under the flock. */
#define CRASH :: atomic { crashes < MAXCRASH -> crashes++; die(); goto crashed }

/* An inode nobody names or has open is gone: its number may be used again
 * (the lowest free one is, which keeps the states few). Live inodes have
 * ver >= 1. */
inline gc(i) {
  if
  :: i != NONE && UNREFERENCED(i) -> ver[i] = 0; owner[i] = NOBODY
  :: else -> skip
  fi
}

/* Judging version v of inode i stale while they are the current bytes of a
 * holder's named inode: that holder did not renew for the threshold. */
inline expire_if_current(i, v) {
  if
  :: v == ver[i] && path == i && holder[owner[i]] && mine[owner[i]] == i ->
    lapsed[owner[i]] = true;
    printf("MSC: P%d's lease has expired: it was paused past the threshold\n", owner[i])
  :: else -> skip
  fi
}

/* unlink(path): whatever it names goes. */
inline unlink_path(target) {
  if
  :: path == NONE -> result = VANISHED
  :: else ->
    printf("MSC: P%d: unlink(path) removes inode %d (it meant inode %d)\n", _pid, path, target);
    assert(path == target);   /* property (A) */
    path = NONE;
    result = REMOVED
  fi;
  committed[_pid] = NONE
}

/* close the judged file */
inline forget() {
  tmp = seen[_pid]; seen[_pid] = NONE; gc(tmp); tmp = 0;
  tv = 0; result = 0
}

/* close our lock file */
inline drop_mine() {
  tmp = mine[_pid]; mine[_pid] = NONE; gc(tmp); tmp = 0;
  result = 0
}

/* A crash: the kernel closes our descriptors. Our flock goes, our file
 * stays. (Locals are cleared only to keep the states few.) */
inline die() {
  printf("MSC: P%d crashes\n", _pid);
  if
  :: myflock[_pid] != NONE -> flock_by[myflock[_pid]] = NOBODY; myflock[_pid] = NONE
  :: else -> skip
  fi;
  holder[_pid] = false; lapsed[_pid] = false; committed[_pid] = NONE;
  forget(); drop_mine();
  passes = 0; renewals = 0; tries = 0; recheck_soon = false
}

/*
 * Reclaim: PIDLock::remove_lock_file_if(seen, bytes == tv) after its flock
 * (taken in the judging step): lstat, pread, unlink, LOCK_UN.
 */
inline reclaim(target, judged) {
  if
  :: atomic {   /* lstat(path): does it still name the inode we opened? */
      if
      :: path == target -> skip
      :: path == NONE -> result = VANISHED
      :: path != NONE && path != target -> result = CHANGED
      fi;
      printf("MSC: P%d: lstat: the path names inode %d (judged inode %d)\n", _pid, path, target)
    }
  CRASH
  fi;
  if
  :: atomic {
      result == 0 ->
      /* pread: the bytes we judged? (the ghost is set in the same step) */
      if
      :: ver[target] == judged -> committed[_pid] = target
      :: else -> result = CHANGED
      fi;
      printf("MSC: P%d: pread inode %d: v%d (judged v%d)\n", _pid, target, ver[target], judged)
    }
    if
    :: atomic { result == 0 -> unlink_path(target) };
      if
      :: atomic { RECLAIM_UNLOCK(target); forget() }   /* flock(LOCK_UN) */
      CRASH
      fi
    :: atomic { result != 0 -> RECLAIM_UNLOCK(target); forget() }
    CRASH
    fi
  :: atomic { result != 0 -> RECLAIM_UNLOCK(target); forget() }
  CRASH
  fi
}

/*
 * Release: PIDLock::release_impl. held() turns false first; then
 * remove_lock_file_if(mine, ownerID is ours), retried while the flock is
 * busy. The pread of our own inode always finds our ownerID (only we write
 * it), so it is folded into the lstat step.
 */
inline release_mine() {
  atomic {
    holder[_pid] = false; lapsed[_pid] = false; renewals = 0; recheck_soon = false;
    printf("MSC: P%d: release inode %d\n", _pid, mine[_pid])
  };
  do
  :: atomic {
      tries < RELTRIES && FLOCK_FREE(mine[_pid]) -> tries = 0; TAKE_FLOCK(mine[_pid]);
      printf("MSC: P%d: flock inode %d\n", _pid, mine[_pid])
    }
    if
    :: atomic {   /* lstat(path): still our inode? pread: our ownerID */
        if
        :: path == mine[_pid] -> committed[_pid] = mine[_pid]
        :: path == NONE -> result = VANISHED
        :: path != NONE && path != mine[_pid] -> result = CHANGED
        fi;
        printf("MSC: P%d: lstat: the path names inode %d (ours: inode %d)\n", _pid, path, mine[_pid])
      }
    CRASH
    fi;
    if
    :: atomic { result == 0 -> unlink_path(mine[_pid]) };
      if
      :: atomic { UNLOCK(mine[_pid]); drop_mine() }   /* flock(LOCK_UN), close */
      CRASH
      fi
    :: atomic { result != 0 -> UNLOCK(mine[_pid]); drop_mine() }
    CRASH
    fi;
    break
  :: atomic { tries < RELTRIES && !FLOCK_FREE(mine[_pid]) -> tries++ }   /* busy: sleep, retry */
  :: atomic { tries >= RELTRIES -> tries = 0; drop_mine() };   /* left to go stale */
    break
  od
}

active [NPROC] proctype Proc() {
  byte passes = 0;
  byte tv;              /* the judged bytes (of inode seen[_pid]) */
  byte result;          /* of a removal */
  byte renewals, tries, tmp;
  bool recheck_soon;

  do
  :: atomic {
      passes < MAXATT && path == NONE -> passes++;
      /* detail::publish: link() of the complete record (a fresh inode); take_ownership */
      tmp = 1;
      do
      :: ver[tmp] == 0 -> break
      :: else -> tmp++; assert(tmp <= MAXINODE)
      od;
      path = tmp; tmp = 0;
      ver[path] = 1; owner[path] = _pid;
      mine[_pid] = path; holder[_pid] = true; lapsed[_pid] = false;
      printf("MSC: P%d: link() publishes inode %d: P%d holds the lock\n", _pid, path, _pid)
    }
    /* holding: the heartbeat service renews (detail::renew), until loss or release */
    do
    :: atomic {   /* lstat(path): our inode */
        renewals < MAXRENEW && path == mine[_pid] -> renewals++; recheck_soon = false
      }
      atomic {    /* pread: our ownerID (only we write our inode); pwrite the heartbeat */
        ver[mine[_pid]]++;
        printf("MSC: P%d: renews inode %d: v%d\n", _pid, mine[_pid], ver[mine[_pid]]);
        if
        :: path == mine[_pid] && NOT_COMMITTED(mine[_pid]) -> lapsed[_pid] = false
        :: else -> skip
        fi
      }
    :: atomic {   /* lstat(path): gone or replaced; look again next tick */
        renewals < MAXRENEW && path != mine[_pid] && !recheck_soon -> renewals++; recheck_soon = true;
        printf("MSC: P%d: renewal: the path does not name inode %d; look again\n", _pid, mine[_pid])
      }
    :: atomic {   /* gone or replaced twice in a row: the lease is lost */
        path != mine[_pid] && recheck_soon ->   /* (the renewal's next tick: no budget) */
        holder[_pid] = false; lapsed[_pid] = false; renewals = 0; recheck_soon = false;
        printf("MSC: P%d: lease lost\n", _pid);
        drop_mine()
      };
      break
    :: release_mine();
      break
    od
  :: atomic {
      passes < MAXATT && path != NONE -> passes++;
      /* link(): EEXIST. detail::observe_file: open the path, fstat, read */
      seen[_pid] = path; tv = ver[path];
      printf("MSC: P%d: link(): EEXIST; opens inode %d, reads v%d\n", _pid, path, tv)
    }
    /* detail::judge */
    if
    :: atomic {   /* stale: flock(LOCK_EX|LOCK_NB) on the opened inode */
        RECLAIM_FLOCK_FREE(seen[_pid]) ->
        printf("MSC: P%d: judges inode %d v%d stale; reclaims it\n", _pid, seen[_pid], tv);
        expire_if_current(seen[_pid], tv); RECLAIM_TAKE_FLOCK(seen[_pid])
      }
      reclaim(seen[_pid], tv)
    :: atomic { forget() }   /* held (or stale, but the flock is busy): retry later */
    fi
  :: atomic { passes >= MAXATT -> passes = 0 };
    break
  od;
crashed:
  skip
}

/* Property (B), in every reachable state. */
active proctype Exclusion() {
end:
  atomic { UNEXPIRED_HOLDERS > 1 -> assert(UNEXPIRED_HOLDERS <= 1) }
}
