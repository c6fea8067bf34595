"""Answers to assignment 01_first_order written by hand for the integrity tests and benchmark.

Three students (alice, bob, carol) solve every question independently and correctly, each in
their own way; dave hands in alice's work renamed, re-wrapped and commented; erin copies the
body of gd_lib's ``adam_update`` into her ``adam_step``; quinn copies bob's ``MyAdam`` only.
Keys are the grade ids of the answer cells.
"""

from __future__ import annotations

ALICE = {
    "sgd_step": """
def sgd_step(param, grad, buf, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    g = grad + weight_decay * param if weight_decay != 0 else grad
    if momentum == 0:
        return param - lr * g, None
    new_buf = g.clone() if buf is None else momentum * buf + (1 - dampening) * g
    d = g + momentum * new_buf if nesterov else new_buf
    return param - lr * d, new_buf
""",
    "adam_step": """
def adam_step(param, grad, m, v, t, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    beta1, beta2 = betas
    if decoupled:
        param = param * (1 - lr * weight_decay)
    elif weight_decay != 0:
        grad = grad + weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v
""",
    "my_adam": """
class MyAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if len(st) == 0:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                g = p.grad
                if group["weight_decay"]:
                    g = g + group["weight_decay"] * p
                st["exp_avg"] = b1 * st["exp_avg"] + (1 - b1) * g
                st["exp_avg_sq"] = b2 * st["exp_avg_sq"] + (1 - b2) * g * g
                mhat = st["exp_avg"] / (1 - b1 ** st["step"])
                vhat = st["exp_avg_sq"] / (1 - b2 ** st["step"])
                p -= group["lr"] * mhat / (vhat.sqrt() + group["eps"])
        return loss
""",
    "rosenbrock_race": """
def rosenbrock(xy):
    x, y = xy[0], xy[1]
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2


def race(make_optimizer, steps, start=(-1.5, 2.0)):
    xy = torch.tensor(start, dtype=DTYPE, device=device, requires_grad=True)
    opt = make_optimizer([xy])
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = rosenbrock(xy)
        losses.append(loss.detach())
        loss.backward()
        opt.step()
    with torch.no_grad():
        losses.append(rosenbrock(xy))
    return torch.stack(losses)


def steps_to_reach(losses, tol):
    hits = (losses <= tol).nonzero()
    return int(hits[0, 0]) if len(hits) else -1
""",
    "bias_correction": """
def debiased_average(values, beta):
    m = torch.zeros((), dtype=values.dtype, device=values.device)
    out = []
    for t, x in enumerate(values, start=1):
        m = beta * m + (1 - beta) * x
        out.append(m / (1 - beta ** t))
    return torch.stack(out)
""",
}

BOB = {
    "sgd_step": """
def sgd_step(param, grad, buf, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    direction = grad.clone()
    if weight_decay:
        direction.add_(param, alpha=weight_decay)
    new_buf = None
    if momentum:
        if buf is None:
            new_buf = direction.clone()
        else:
            new_buf = buf.mul(momentum).add_(direction, alpha=1.0 - dampening)
        if nesterov:
            direction = direction.add(new_buf, alpha=momentum)
        else:
            direction = new_buf
    updated = param.clone()
    updated.add_(direction, alpha=-lr)
    return updated, new_buf
""",
    "adam_step": """
def adam_step(param, grad, m, v, t, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas
    theta = param.clone()
    g = grad.clone()
    if weight_decay and decoupled:
        theta.mul_(1.0 - lr * weight_decay)
    if weight_decay and not decoupled:
        g.add_(theta, alpha=weight_decay)
    m_new = torch.lerp(m, g, 1.0 - b1)
    v_new = v.mul(b2).addcmul(g, g, value=1.0 - b2)
    correction1 = 1.0 - b1 ** t
    correction2 = 1.0 - b2 ** t
    denominator = torch.sqrt(v_new / correction2) + eps
    theta.addcdiv_(m_new / correction1, denominator, value=-lr)
    return theta, m_new, v_new
""",
    "my_adam": """
class MyAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _moments(self, p):
        state = self.state[p]
        if "step" not in state:
            state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()
        for group in self.param_groups:
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in filter(lambda q: q.grad is not None, group["params"]):
                state = self._moments(p)
                state["step"] += 1
                n = state["step"]
                grad = p.grad.add(p, alpha=wd) if wd != 0 else p.grad
                state["exp_avg"].lerp_(grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                scale = math.sqrt(1 - beta2 ** n)
                step_size = lr / (1 - beta1 ** n)
                p.addcdiv_(state["exp_avg"], state["exp_avg_sq"].sqrt().div(scale).add(eps), value=-step_size)
        return loss
""",
    "rosenbrock_race": """
def rosenbrock(xy):
    a = 1.0 - xy[0]
    b = xy[1] - xy[0] * xy[0]
    return a * a + 100.0 * b * b


def race(make_optimizer, steps, start=(-1.5, 2.0)):
    point = torch.tensor(list(start), dtype=torch.float64, device=device).requires_grad_()
    optimizer = make_optimizer([point])
    history = torch.empty(steps + 1, dtype=torch.float64, device=device)
    for i in range(steps):
        optimizer.zero_grad()
        f = rosenbrock(point)
        history[i] = f.item()
        f.backward()
        optimizer.step()
    history[steps] = rosenbrock(point.detach())
    return history


def steps_to_reach(losses, tol):
    for index, value in enumerate(losses.tolist()):
        if value <= tol:
            return index
    return -1
""",
    "bias_correction": """
def debiased_average(values, beta):
    result = torch.empty_like(values)
    running = 0.0
    power = 1.0
    for i in range(values.shape[0]):
        running = beta * running + (1.0 - beta) * values[i]
        power *= beta
        result[i] = running / (1.0 - power)
    return result
""",
}

CAROL = {
    "sgd_step": """
def _with_decay(grad, param, weight_decay):
    return grad if weight_decay == 0 else grad + param * weight_decay


def sgd_step(param, grad, buf, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    g = _with_decay(grad, param, weight_decay)
    if not momentum:
        return param - g * lr, None
    b = g.clone() if buf is None else buf * momentum + g * (1 - dampening)
    step_dir = (g + b * momentum) if nesterov else b
    return param - step_dir * lr, b
""",
    "adam_step": '''
def adam_step(param, grad, m, v, t, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    """Kingma & Ba, Algorithm 1, out of place."""
    beta_1, beta_2 = betas
    shrink = 1 - lr * weight_decay if decoupled else 1.0
    g = grad if (decoupled or weight_decay == 0) else grad + param * weight_decay
    first = torch.add(m * beta_1, g, alpha=1 - beta_1)
    second = torch.add(v * beta_2, g.pow(2), alpha=1 - beta_2)
    step = lr / (1 - beta_1 ** t)
    denom = torch.sqrt(second) / math.sqrt(1 - beta_2 ** t) + eps
    return param * shrink - step * first / denom, first, second
''',
    "my_adam": """
class MyAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super(MyAdam, self).__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                              "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        result = None
        if callable(closure):
            with torch.enable_grad():
                result = closure()
        for g in self.param_groups:
            for w in g["params"]:
                if w.grad is None:
                    continue
                s = self.state[w]
                s.setdefault("step", 0)
                s.setdefault("exp_avg", torch.zeros_like(w))
                s.setdefault("exp_avg_sq", torch.zeros_like(w))
                s["step"] = s["step"] + 1
                d = w.grad if g["weight_decay"] == 0 else w.grad + w * g["weight_decay"]
                s["exp_avg"].mul_(g["betas"][0]).add_((1 - g["betas"][0]) * d)
                s["exp_avg_sq"].mul_(g["betas"][1]).add_((1 - g["betas"][1]) * d.square())
                corrected_m = s["exp_avg"] / (1 - g["betas"][0] ** s["step"])
                corrected_v = s["exp_avg_sq"] / (1 - g["betas"][1] ** s["step"])
                w.sub_(g["lr"] * corrected_m / (corrected_v.sqrt() + g["eps"]))
        return result
""",
    "rosenbrock_race": """
def rosenbrock(xy):
    return torch.square(1 - xy[0]) + 100 * torch.square(xy[1] - torch.square(xy[0]))


def race(make_optimizer, steps, start=(-1.5, 2.0)):
    position = torch.nn.Parameter(torch.as_tensor(start, dtype=DTYPE).to(device))
    opt = make_optimizer([position])

    def closure():
        opt.zero_grad()
        value = rosenbrock(position)
        value.backward()
        return value

    values = []
    for _ in range(steps):
        values.append(closure().detach().clone())
        opt.step()
    values.append(rosenbrock(position).detach())
    return torch.stack(values).to(dtype=DTYPE)


def steps_to_reach(losses, tol):
    below = torch.where(losses <= tol)[0]
    return below.min().item() if below.numel() > 0 else -1
""",
    "bias_correction": """
def debiased_average(values, beta):
    T = values.shape[0]
    t = torch.arange(1, T + 1, dtype=values.dtype, device=values.device)
    # m_t = sum_i (1 - beta) beta^(t - i) x_i, as a lower-triangular matrix product
    exponents = (t[:, None] - t[None, :]).clamp(min=0)
    weights = torch.tril((1 - beta) * beta ** exponents)
    return (weights @ values) / (1 - beta ** t)
""",
}

# dave: alice's answers, variables renamed, lines re-wrapped, spacing changed, comments and
# docstrings added, one conditional expression spread over an if/else of the same tokens order.
DAVE = {
    "sgd_step": '''
def sgd_step(param, grad, buf, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """One SGD step (my own implementation)."""
    # apply weight decay first
    gradient = (grad + weight_decay*param
                if weight_decay != 0 else grad)
    if momentum == 0:   # plain SGD
        return param - lr*gradient, None
    # momentum buffer
    buffer = gradient.clone() if buf is None else momentum*buf + (1 - dampening)*gradient
    direction = gradient + momentum*buffer if nesterov else buffer
    return param - lr*direction, buffer
''',
    "adam_step": '''
def adam_step(param, grad, m, v, t, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    """Adam as in the paper."""
    b_one, b_two = betas
    if decoupled:          # AdamW
        param = param*(1 - lr*weight_decay)
    elif weight_decay != 0:
        grad = grad + weight_decay*param
    first_moment = b_one*m + (1 - b_one)*grad
    second_moment = b_two*v + (1 - b_two)*grad*grad
    # bias correction
    first_hat = first_moment/(1 - b_one**t)
    second_hat = second_moment/(1 - b_two**t)
    return (param - lr*first_hat/(second_hat.sqrt() + eps),
            first_moment, second_moment)
''',
    "my_adam": '''
class MyAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        hyper = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, hyper)

    @torch.no_grad()
    def step(self, closure=None):
        """Take one optimization step."""
        result = None
        if closure is not None:
            with torch.enable_grad():
                result = closure()
        for param_group in self.param_groups:
            beta_a, beta_b = param_group["betas"]
            for prm in param_group["params"]:
                if prm.grad is None:
                    continue   # nothing to do
                state = self.state[prm]
                if len(state) == 0:
                    # initialise
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(prm)
                    state["exp_avg_sq"] = torch.zeros_like(prm)
                state["step"] += 1
                gr = prm.grad
                if param_group["weight_decay"]:
                    gr = gr + param_group["weight_decay"]*prm
                state["exp_avg"] = beta_a*state["exp_avg"] + (1 - beta_a)*gr
                state["exp_avg_sq"] = beta_b*state["exp_avg_sq"] + (1 - beta_b)*gr*gr
                m_corr = state["exp_avg"]/(1 - beta_a**state["step"])
                v_corr = state["exp_avg_sq"]/(1 - beta_b**state["step"])
                prm -= param_group["lr"]*m_corr/(v_corr.sqrt() + param_group["eps"])
        return result
''',
    "rosenbrock_race": """
def rosenbrock(xy):
    # the banana function
    a, b = xy[0], xy[1]
    return (1 - a)**2 + 100*(b - a**2)**2


def race(make_optimizer, steps, start=(-1.5, 2.0)):
    point = torch.tensor(start, dtype=DTYPE,
                         device=device, requires_grad=True)
    optimizer = make_optimizer([point])
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        value = rosenbrock(point)
        history.append(value.detach())
        value.backward()
        optimizer.step()
    with torch.no_grad():
        history.append(rosenbrock(point))
    return torch.stack(history)


def steps_to_reach(losses, tol):
    idx = (losses <= tol).nonzero()
    return int(idx[0, 0]) if len(idx) else -1
""",
    "bias_correction": """
def debiased_average(values, beta):
    avg = torch.zeros((), dtype=values.dtype,
                      device=values.device)
    result = []
    for step, value in enumerate(values, start=1):
        avg = beta*avg + (1 - beta)*value   # EMA
        result.append(avg/(1 - beta**step))
    return torch.stack(result)
""",
}

# erin: adam_step is gd_lib.optim.adam.adam_update's body, renamed and made out of place
ERIN_ADAM = """
def adam_step(param, grad, m, v, t, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas
    param, m, v = param.clone(), m.clone(), v.clone()
    g = grad
    if weight_decay != 0:
        if decoupled:
            param.mul_(1 - lr * weight_decay)
        else:
            g = g.add(param, alpha=weight_decay)
    m.lerp_(g, 1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    bias_correction1 = 1 - b1 ** t
    bias_correction2_sqrt = (1 - b2 ** t) ** 0.5
    step_size = lr / bias_correction1
    second_moment = v
    denom = (second_moment.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(m, denom, value=-step_size)
    return param, m, v
"""

# erin's other answers are her own (she skipped MyAdam and the race)
ERIN = {
    "adam_step": ERIN_ADAM,
    "sgd_step": """
def sgd_step(param, grad, buf, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    if weight_decay > 0:
        grad = torch.add(grad, param, alpha=weight_decay)
    if momentum <= 0:
        return torch.add(param, grad, alpha=-lr), None
    if buf is not None:
        buf = torch.add(buf * momentum, grad, alpha=1 - dampening)
    else:
        buf = torch.clone(grad).detach()
    if nesterov:
        return torch.add(param, torch.add(grad, buf, alpha=momentum), alpha=-lr), buf
    return torch.add(param, buf, alpha=-lr), buf
""",
    "bias_correction": """
def debiased_average(values, beta):
    outs, acc = [], torch.tensor(0.0, dtype=values.dtype, device=values.device)
    for k in range(len(values)):
        acc = torch.lerp(values[k], acc, beta)
        outs.append(acc / (1.0 - beta ** (k + 1)))
    return torch.stack(outs)
""",
}

# quinn: bob's MyAdam, renamed; nothing else answered
QUINN = {
    "my_adam": """
class MyAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _get_state(self, param):
        st = self.state[param]
        if "step" not in st:
            st.update(step=0, exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param))
        return st

    @torch.no_grad()
    def step(self, closure=None):
        # evaluate the closure with gradients on
        out = None if closure is None else torch.enable_grad()(closure)()
        for grp in self.param_groups:
            rate, epsilon, decay = grp["lr"], grp["eps"], grp["weight_decay"]
            bA, bB = grp["betas"]
            for w in filter(lambda z: z.grad is not None, grp["params"]):
                st = self._get_state(w)
                st["step"] += 1
                count = st["step"]
                gw = w.grad.add(w, alpha=decay) if decay != 0 else w.grad
                st["exp_avg"].lerp_(gw, 1 - bA)
                st["exp_avg_sq"].mul_(bB).addcmul_(gw, gw, value=1 - bB)
                c2 = math.sqrt(1 - bB ** count)
                lr_t = rate / (1 - bA ** count)
                w.addcdiv_(st["exp_avg"], st["exp_avg_sq"].sqrt().div(c2).add(epsilon), value=-lr_t)
        return out
""",
}

INDEPENDENT = {"alice": ALICE, "bob": BOB, "carol": CAROL}
CLASS = {"alice": ALICE, "bob": BOB, "carol": CAROL, "dave": DAVE, "erin": ERIN, "quinn": QUINN}
