/* SPDX-License-Identifier: MIT */
/* kvmig/kvmig.h - the whole public API. */
#ifndef KVMIG_KVMIG_H
#define KVMIG_KVMIG_H

#include <kvmig/common.h>
#include <kvmig/pager.h>
#include <kvmig/synth.h>
#include <kvmig/mem.h>
#include <kvmig/cas.h>
#include <kvmig/migrate.h>
#include <kvmig/agent.h>

#endif
