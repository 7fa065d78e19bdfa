<?php

declare(strict_types=1);

namespace Nudge;

/** An event the contract refuses; nothing was sent. */
final class InvalidEvent extends \InvalidArgumentException
{
    public function __construct(public readonly string $field, string $message)
    {
        parent::__construct("nudge: invalid event: {$field}: {$message}");
    }
}
