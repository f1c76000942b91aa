/*
 * fencing.pml -- a Promela model of lockfile's fencing tokens
 * (Options::fencing: include/lockfile/detail/fencing.hpp, steps 1 to 6, as
 * PIDLock::own and PIDLock::fence in detail/pid_lock.hpp run them;
 * docs/design.md "Fencing tokens").
 *
 *   spin -a fencing.pml                the protocol as implemented
 *   spin -DCOUNTER -a fencing.pml      tokens from a read-then-write counter
 *   spin -DCHECK_FIRST -a fencing.pml  the ownership check before the creation
 *   spin -DNO_RELIST -a fencing.pml    no listing after the creation (step 3)
 *   spin -DLOCKLESS ... -a fencing.pml no lock, no ownership check: every
 *                                      creator hands out its number, as
 *                                      create_next_generation alone does in
 *                                      the lockless test of
 *                                      tests/test_fencing.cpp
 *
 * tests/model/check.sh verifies the protocol exhaustively (3 processes),
 * with the lock and LOCKLESS, and expects spin to find a counterexample in
 * COUNTER, CHECK_FIRST and LOCKLESS NO_RELIST, so the model is known to be
 * able to fail. NO_RELIST with the lock verifies: see "What step 3 is for".
 *
 * ---------------------------------------------------------------------------
 * The world
 * ---------------------------------------------------------------------------
 * - `names`: bit k is set while the generation name .<name>.fence.<k>
 *   exists (1 <= k <= MAXTOK). An exclusive creation (O_EXCL) and a removal
 *   are one step each. A listing reads `names` in one step: one batch of a
 *   Linux readdir holds the directory's lock, which creation and removal
 *   take (fencing.hpp says where that fails: huge directories, network
 *   file systems; not modelled).
 * - `owner`: the process whose lock file the lock path names. The lock
 *   file's own protocol is lockfile.pml's; here only what fencing relies on
 *   is left of it: a publication sets `owner`, and the ownership check of
 *   step 4 (does the path still name our inode?) compares it. A link never
 *   names an inode again once the path has stopped naming it, so the check
 *   is exact.
 * - Taking over: a contender publishes when the lock is free or its lease
 *   is stale, and any holder may be paused past its lease anywhere (a pause
 *   is interleaving). So a publication may come at any time from any
 *   process that is not inside an acquisition, and replaces `owner`: the
 *   taken-over holder goes on believing it holds the lock, which is what
 *   fencing is for. Release is left out: it only turns `owner` from the
 *   releaser into nobody, which no other process's check can tell from a
 *   takeover.
 * - Crashes are pauses that never end (the names stay, as a paused
 *   process's do). Failing system calls (an acquisition undone) and
 *   durability across a machine crash are not modelled.
 * - The bound: names and tokens 1..MAXTOK. A listing whose highest is
 *   MAXTOK ends the acquisition without a token, as the library's does at
 *   2^64 - 1 ("the tokens of this lock are used up"), so no run wraps or
 *   goes past the bound unseen; MAXACQ acquisitions per process end every
 *   run. Retries (steps 2 and 3) are not bounded: their loops are cycles in
 *   the state space or climb to the bound.
 *
 * ---------------------------------------------------------------------------
 * A process (proctype Proc): up to MAXACQ acquisitions, each
 * ---------------------------------------------------------------------------
 *   0. publish: owner = us (not with LOCKLESS);
 *   1. list: N = the highest listed + 1;
 *   2. create N exclusively; it exists: back to 1;
 *   3. list again: a name above N: remove N (a step of its own), back to 1;
 *   4. owner still us? If not, the attempt is lost: no token, name N stays
 *      (PIDLock::fence: taken_over). LOCKLESS: no check;
 *   5. hand N out;
 *   6. remove the names below N that step 3 listed, one step each, in any
 *      order (best effort, taken over or not).
 * Steps 4 and 5 are one step: once the check has passed the token is fixed,
 * and writing it into the record and returning touch nothing another
 * process reads. (A holder paused between them returns its token after its
 * successor has returned a higher one: its own is the lower, so the
 * resource rejects it, as fencing should.)
 * COUNTER: 1. read c; 2. write c + 1, N = c + 1; then 4 and 5, nothing to
 * remove. CHECK_FIRST: 4 comes right after 0 (lost: nothing created), then
 * 1 to 3 with their retries, 5 and 6 -- the check before
 * create_next_generation, which loops over steps 1 to 3. NO_RELIST: no step
 * 3; step 6 removes the names below N that step 1 listed.
 *
 * ---------------------------------------------------------------------------
 * The properties, asserted at each hand-out (ghost variables)
 * ---------------------------------------------------------------------------
 * An acquisition holds the lock from the instant its ownership check
 * passes; it is ordered by that instant (it is also the instant of the
 * hand-out, but for CHECK_FIRST).
 * unique:  no token is handed out twice: assert(!(handed & BIT(t)));
 * order:   a token is above every token handed out before its check passed:
 *          assert(t > floor[_pid]), floor being `highest` at the check;
 * fencing: an acquisition that published after X's check passed gets a
 *          token above X's. Where X hands out first, order says so; that
 *          X hands out later needs its check and its hand-out apart
 *          (CHECK_FIRST): the processes that publish while X is `checked`
 *          are noted in since[X], the lowest token they hand out meanwhile
 *          in lowest[X], and at X's hand-out assert(t < lowest[_pid]).
 * Together, order and fencing say the tokens rise in the order of the
 * checks (a check that passes after X's belongs to an acquisition that
 * published after it). LOCKLESS has no checks, so nothing orders its
 * creators: only unique is asserted there.
 *
 * ---------------------------------------------------------------------------
 * What step 3 is for
 * ---------------------------------------------------------------------------
 * With the check after the creation, acquisitions whose checks pass are
 * serialized: from X's publication to X's check the path names X's file,
 * so no other check passes meanwhile, and X's steps 1 to 3 lie between. The
 * highest token handed out before X published keeps its name all that time
 * (only the creator of a higher token removes it, after that one's check),
 * so X's step 1 lists it and X goes higher, with or without step 3: spin
 * verifies NO_RELIST. A stale listing fools only a creator whose check then
 * fails, and its number is never handed out. Step 3 keeps
 * create_next_generation's own promise, unique tokens between creators
 * that nothing serializes (LOCKLESS; or a check that cannot exclude, such
 * as CHECK_FIRST's): there a creator paused between steps 1 and 2 finds a
 * number handed out and removed since free again, and hands it out again.
 */

#define NPROC 3
#ifndef MAXACQ
#define MAXACQ 2        /* acquisitions per process */
#endif
#ifndef MAXTOK
#define MAXTOK 6        /* names and tokens 1..MAXTOK */
#endif
#if MAXTOK > 6
#error "names are bits 1..7 of a byte (N + 1 must fit), and step 6 is written out for 1..5"
#endif
#define BIT(k) (1 << (k))
#define BELOW(k) (BIT(k) - 1)   /* bits 0..k-1: the names below k */
#define NOBODY 255
#define NOTOK (MAXTOK + 1)

#if NPROC != 3
#error "the macros below are written for NPROC == 3"
#endif

byte names = 0;             /* bit k: generation name k exists */
byte owner = NOBODY;        /* whose lock file the lock path names */
byte counter = 0;           /* COUNTER: the counter */

/* ghosts: what the properties need */
byte handed = 0;            /* bit k: token k was handed out */
byte highest = 0;           /* the highest token handed out */
bool checked[NPROC];        /* the check passed, the token is not out yet */
byte floor[NPROC];          /* ... `highest` when the check passed */
byte since[NPROC];          /* ... the processes that published since */
byte lowest[NPROC] = NOTOK; /* ... the lowest token they handed out since */

/* A publication while q is `checked` comes after q's check. */
#define NOTE_PUBLISH(q) if :: checked[q] -> since[q] = since[q] | BIT(_pid) :: else -> skip fi
/* Token t, of an acquisition that published after q's check. */
#define NOTE_TOKEN(q, t) if :: checked[q] && (since[q] & BIT(_pid)) && (t) < lowest[q] -> lowest[q] = (t) \
                            :: else -> skip fi

inline publish() {
  owner = _pid;
  NOTE_PUBLISH(0); NOTE_PUBLISH(1); NOTE_PUBLISH(2);
  printf("MSC: P%d publishes its lock file (takes the lock over)\n", _pid)
}

inline check_passed() {
  checked[_pid] = true; floor[_pid] = highest;
  printf("MSC: P%d: the lock path names its file\n", _pid)
}

inline hand_out(t) {
  printf("MSC: P%d hands out token %d\n", _pid, t);
  assert(!(handed & BIT(t)));   /* unique */
#ifndef LOCKLESS
  assert(t > floor[_pid]);      /* order */
  assert(t < lowest[_pid]);     /* fencing */
#endif
  handed = handed | BIT(t);
  if
  :: t > highest -> highest = t
  :: else -> skip
  fi;
  NOTE_TOKEN(0, t); NOTE_TOKEN(1, t); NOTE_TOKEN(2, t);
  checked[_pid] = false; floor[_pid] = 0; since[_pid] = 0; lowest[_pid] = NOTOK
}

/* Step 1: N = the highest listed + 1. Only NO_RELIST keeps the listing
 * (for step 6); the others list again in step 3. */
inline list_next(n) {
#ifdef NO_RELIST
  snap = names;
#endif
  n = MAXTOK;
  do
  :: n > 0 && !(names & BIT(n)) -> n--
  :: else -> break
  od;
  n++;
  printf("MSC: P%d lists the names: highest %d\n", _pid, n - 1)
}

/* The acquisition ends without a token: the tokens are used up. */
#define USED_UP(n) if :: (n) > MAXTOK -> printf("MSC: P%d: the tokens are used up\n", _pid); goto next \
                      :: else -> skip fi

/* Step 6: one removal, any of those left. */
#define REMOVE(k) :: atomic { below & BIT(k) -> below = below & ~BIT(k); names = names & ~BIT(k); \
                              printf("MSC: P%d removes name %d\n", _pid, k) }

active [NPROC] proctype Proc() {
  byte acq = 0;
  byte n;                   /* N */
  byte snap;                /* NO_RELIST: step 1's listing */
  byte below;               /* step 6's names */

  do
  :: acq < MAXACQ ->
#ifndef LOCKLESS
    atomic { acq++; publish() };
#else
    acq++;
#endif
#ifdef CHECK_FIRST
    if
    :: atomic { owner == _pid -> check_passed() }
    :: atomic { owner != _pid -> printf("MSC: P%d: taken over: lost\n", _pid) };
      goto next
    fi;
#endif
#ifdef COUNTER
    atomic { n = counter + 1; printf("MSC: P%d reads the counter: %d\n", _pid, counter); USED_UP(n) };
    atomic { counter = n; printf("MSC: P%d writes the counter: %d\n", _pid, n) };
    below = 0;
#else
retry:
    atomic { list_next(n); USED_UP(n) };
    if
    :: atomic { !(names & BIT(n)) -> names = names | BIT(n); printf("MSC: P%d creates name %d\n", _pid, n) }
    :: atomic { names & BIT(n) -> printf("MSC: P%d: name %d exists\n", _pid, n) };
      goto retry
    fi;
#ifndef NO_RELIST
    atomic {
      printf("MSC: P%d lists again\n", _pid);
      if
      :: names & ~BELOW(n + 1) -> skip   /* a name above N: N may have been handed out and removed */
      :: else -> below = names & BELOW(n); goto created
      fi
    };
    atomic { names = names & ~BIT(n); printf("MSC: P%d: a higher name: removes its %d\n", _pid, n); n = 0 };
    goto retry;
created:
#else
    below = snap & BELOW(n);
    snap = 0;
#endif
#endif
#if defined(CHECK_FIRST) || defined(LOCKLESS)
    atomic { hand_out(n); n = 0 };
#else
    if
    :: atomic { owner == _pid -> check_passed(); hand_out(n); n = 0 }
    :: atomic { owner != _pid -> below = 0; printf("MSC: P%d: taken over: lost (name %d stays)\n", _pid, n); n = 0 }
    fi;
#endif
    do
    REMOVE(1)
    REMOVE(2)
    REMOVE(3)
    REMOVE(4)
    REMOVE(5)
    :: below == 0 -> break
    od;
next:
    n = 0; snap = 0
  :: else -> break
  od
}
