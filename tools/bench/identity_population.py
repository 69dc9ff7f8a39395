"""A seeded population of hospital registrations with realistic duplicates, and the truth.

Households share an address and a family phone; a couple keeps two family names (Chinese
wives keep theirs); some households have twins (same birth date, address and phone, given
names a syllable apart) and newborns registered without an ID (given name not chosen yet,
the mother's phone). Each person is registered at one to four hospitals, and each
registration carries the errors registration desks make: Chinese characters or pinyin with
or without tone marks, given and family names swapped, a homophone character, a letter typo,
transliterated foreign names spelled several ways, day and month swapped, a digit typo in the
birth date, missing fields, the family phone instead of the personal one, the wrong sex.

Nothing here is real: names are drawn from common-name tables, IDs and phones are random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

# (character, pinyin with tone marks): common family names without a second reading.
FAMILY_NAMES = [
    ("王", "Wáng"), ("李", "Lǐ"), ("张", "Zhāng"), ("刘", "Liú"), ("陈", "Chén"),
    ("杨", "Yáng"), ("黄", "Huáng"), ("赵", "Zhào"), ("吴", "Wú"), ("周", "Zhōu"),
    ("徐", "Xú"), ("孙", "Sūn"), ("马", "Mǎ"), ("朱", "Zhū"), ("胡", "Hú"),
    ("郭", "Guō"), ("何", "Hé"), ("林", "Lín"), ("罗", "Luó"), ("高", "Gāo"),
    ("郑", "Zhèng"), ("梁", "Liáng"), ("谢", "Xiè"), ("宋", "Sòng"), ("唐", "Táng"),
    ("许", "Xǔ"), ("韩", "Hán"), ("冯", "Féng"), ("邓", "Dèng"), ("吕", "Lǚ"),
]  # fmt: skip
GIVEN_CHARACTERS = [
    ("伟", "Wěi"), ("芳", "Fāng"), ("娜", "Nà"), ("敏", "Mǐn"), ("静", "Jìng"),
    ("丽", "Lì"), ("强", "Qiáng"), ("磊", "Lěi"), ("军", "Jūn"), ("洋", "Yáng"),
    ("勇", "Yǒng"), ("艳", "Yàn"), ("杰", "Jié"), ("娟", "Juān"), ("涛", "Tāo"),
    ("明", "Míng"), ("超", "Chāo"), ("秀", "Xiù"), ("霞", "Xiá"), ("平", "Píng"),
    ("刚", "Gāng"), ("桂", "Guì"), ("英", "Yīng"), ("华", "Huá"), ("建", "Jiàn"),
    ("国", "Guó"), ("文", "Wén"), ("玉", "Yù"), ("兰", "Lán"), ("红", "Hóng"),
    ("志", "Zhì"), ("海", "Hǎi"), ("春", "Chūn"), ("宇", "Yǔ"), ("浩", "Hào"),
    ("欣", "Xīn"), ("博", "Bó"), ("思", "Sī"), ("佳", "Jiā"), ("怡", "Yí"),
    ("鑫", "Xīn"), ("婷", "Tíng"), ("琳", "Lín"), ("凯", "Kǎi"), ("斌", "Bīn"),
]  # fmt: skip
# Characters a registration clerk's input method offers for the same syllable.
HOMOPHONES = {
    "伟": "维", "芳": "方", "娜": "纳", "敏": "民", "静": "晶", "丽": "莉", "明": "铭",
    "杰": "洁", "华": "桦", "婷": "庭", "琳": "林", "宇": "雨", "欣": "新", "涛": "滔",
}  # fmt: skip
# Transliterated foreign names: the first spelling is the passport's, the rest appear too.
FOREIGN_FAMILY_NAMES = [
    ["Ivanov", "Ivanoff"], ["Petrov"], ["Smirnov", "Smirnoff"], ["Kuznetsov", "Kouznetsov"],
    ["Al-Hassan", "Alhassan", "El Hassan"], ["Rahman", "Rehman"], ["Khan"], ["Popov"],
    ["Tkachenko", "Tkachenco"], ["Haddad"], ["Nasser", "Nasir"], ["Volkov", "Wolkow"],
    ["Nguyen"], ["Kim"], ["Park", "Pak"], ["Tanaka"], ["Sato"], ["Müller", "Mueller"],
]  # fmt: skip
FOREIGN_GIVEN_NAMES = [
    ["Aleksandr", "Alexander", "Aleksander"], ["Sergey", "Sergei"], ["Dmitry", "Dmitri"],
    ["Mohammed", "Muhammad", "Mohamed"], ["Yusuf", "Youssef"], ["Ahmed", "Ahmad"],
    ["Natalia", "Natalya"], ["Ekaterina", "Yekaterina"], ["Fatima", "Fatimah"],
    ["Olga"], ["Yuri", "Yury"], ["Hussein", "Husain"], ["Anna"], ["Minh"], ["Ji-hoon"],
    ["Haruto"], ["Yuki"], ["Jürgen", "Juergen"], ["Elena", "Yelena"], ["Omar"],
]  # fmt: skip
DISTRICTS = ["朝阳区", "海淀区", "东城区", "西城区", "丰台区", "通州区", "昌平区", "大兴区"]
STREETS = ["建国路", "中关村大街", "长安街", "学院路", "望京街", "科技园路", "西直门外大街"]

NEWBORN_DAYS = 28
SEX_TYPO_RATE = 0.005


@dataclass(frozen=True)
class Registration:
    """One hospital's registration of a person, as the hospital typed it."""

    person_id: int
    hospital_id: str
    mrn: str
    family_name: str
    given_name: str
    birth_date: str  # YYYY-MM-DD or ""
    sex: str
    phone: str
    address: str
    national_id: str


@dataclass
class _Person:
    person_id: int
    foreign: bool
    family: list[str]  # characters/pinyin pair, or the foreign spellings
    given: list[tuple[str, str]] | list[str]
    birth: date
    sex: str
    phone: str
    household_phone: str
    address: str
    national_id: str
    newborn: bool = False


class PopulationGenerator:
    """Persons and their registrations, reproducible from a seed."""

    def __init__(self, seed: int, today: date) -> None:
        """Draw from ``random.Random(seed)``; newborns are born shortly before ``today``."""
        self._rng = random.Random(seed)
        # Errors added later draw from their own generator, so the rest of a seed's
        # population stays what it was and figures before and after compare.
        self._sex_typos = random.Random(f"{seed}:sex")
        self._today = today
        self._next_person = 0
        self._next_mrn = 0

    def population(self, persons: int) -> list[Registration]:
        """Registrations of at least ``persons`` persons, shuffled."""
        people: list[_Person] = []
        while len(people) < persons:
            people.extend(self._household())
        registrations = [
            registration for person in people for registration in self._registrations(person)
        ]
        self._rng.shuffle(registrations)
        return registrations

    # --- persons ---

    def _household(self) -> list[_Person]:
        rng = self._rng
        address = (
            f"北京市{rng.choice(DISTRICTS)}{rng.choice(STREETS)}{rng.randint(1, 300)}号"
            f"{rng.randint(1, 12)}单元{rng.randint(1, 30)}{rng.randint(1, 9):02d}"
        )
        phone = self._phone()
        foreign = rng.random() < 0.08
        family = self._family(foreign)
        members = [self._person(foreign, family, self._adult_birth(), address, phone)]
        if rng.random() < 0.6:  # a spouse keeps their own family name
            members.append(
                self._person(foreign, self._family(foreign), self._adult_birth(), address, phone)
            )
        children = rng.choice([0, 0, 1, 1, 2])
        for _ in range(children):
            members.append(self._person(foreign, family, self._child_birth(), address, phone))
        if children and rng.random() < 0.08:  # twins: same day, a syllable apart
            twin = members[-1]
            members.append(self._person(foreign, family, twin.birth, address, phone, like=twin))
        if rng.random() < 0.04:
            newborn = self._person(
                foreign,
                family,
                self._today - timedelta(days=rng.randint(0, NEWBORN_DAYS - 1)),
                address,
                phone,
            )
            newborn.given = []
            newborn.national_id = ""
            newborn.newborn = True
            members.append(newborn)
        return members

    def _person(
        self,
        foreign: bool,
        family: list[str],
        birth: date,
        address: str,
        household_phone: str,
        like: _Person | None = None,
    ) -> _Person:
        rng = self._rng
        given = self._given(foreign)
        if like is not None and not foreign and like.given:
            # A twin shares the first given character and differs in the second.
            first = like.given[0]
            assert isinstance(first, tuple)
            while True:
                second = rng.choice(GIVEN_CHARACTERS)
                if second != like.given[-1] and second[1] != first[1]:
                    break
            given = [first, second]
        self._next_person += 1
        adult = (self._today - birth).days > 18 * 365
        return _Person(
            person_id=self._next_person,
            foreign=foreign,
            family=family,
            given=given,
            birth=birth,
            sex=rng.choice(["male", "female"]),
            phone=self._phone() if adult else household_phone,
            household_phone=household_phone,
            address=address,
            national_id="" if foreign else f"{rng.randrange(10**17, 10**18)}",
        )

    def _family(self, foreign: bool) -> list[str]:
        if foreign:
            return self._rng.choice(FOREIGN_FAMILY_NAMES)
        return list(self._rng.choice(FAMILY_NAMES))

    def _given(self, foreign: bool) -> list[tuple[str, str]] | list[str]:
        if foreign:
            return self._rng.choice(FOREIGN_GIVEN_NAMES)
        return [self._rng.choice(GIVEN_CHARACTERS) for _ in range(self._rng.choice([1, 2, 2]))]

    def _adult_birth(self) -> date:
        return date(1945, 1, 1) + timedelta(days=self._rng.randint(0, 55 * 365))

    def _child_birth(self) -> date:
        return self._today - timedelta(days=self._rng.randint(60, 17 * 365))

    def _phone(self) -> str:
        return f"1{self._rng.choice('3589')}{self._rng.randrange(10**9):09d}"

    # --- registrations ---

    def _registrations(self, person: _Person) -> list[Registration]:
        count = 1 if person.newborn else self._rng.choices([1, 2, 3, 4], [50, 30, 15, 5])[0]
        hospitals = self._rng.sample(range(1, 21), count)
        return [self._registration(person, f"H{hospital:03d}") for hospital in hospitals]

    def _registration(self, person: _Person, hospital_id: str) -> Registration:
        rng = self._rng
        family, given = self._written_name(person)
        self._next_mrn += 1
        return Registration(
            person_id=person.person_id,
            hospital_id=hospital_id,
            mrn=f"MRN{self._next_mrn:08d}",
            family_name=family,
            given_name=given,
            birth_date=self._written_birth(person.birth),
            sex="" if rng.random() < 0.05 else self._written_sex(person.sex),
            phone=self._written_phone(person),
            address=self._written_address(person.address),
            national_id=person.national_id if rng.random() < 0.5 else "",
        )

    def _written_sex(self, sex: str) -> str:
        """The other box ticked now and then (an assumed rate: none was found published for
        registration desks)."""
        if self._sex_typos.random() < SEX_TYPO_RATE:
            return "female" if sex == "male" else "male"
        return sex

    def _written_name(self, person: _Person) -> tuple[str, str]:
        rng = self._rng
        if person.foreign:
            family_spellings = person.family
            given_spellings = person.given
            assert isinstance(given_spellings, list)
            family = self._spelling(family_spellings)
            given = (
                self._spelling([str(name) for name in given_spellings]) if given_spellings else ""
            )
            if rng.random() < 0.05:
                family, given = given, family
            return family, given
        characters = [pair for pair in person.given if isinstance(pair, tuple)]
        script = rng.random()
        if script < 0.5:
            given = "".join(
                HOMOPHONES.get(char, char) if rng.random() < 0.04 else char
                for char, _ in characters
            )
            return person.family[0], given
        toned = script < 0.65
        family = self._pinyin(person.family[1], toned)
        syllables = [self._pinyin(pinyin, toned) for _, pinyin in characters]
        separator = rng.choice(["", "", " ", "-"])
        given = (
            separator.join(
                [syllables[0], *(s.lower() if separator == "" else s for s in syllables[1:])]
            )
            if syllables
            else ""
        )
        if rng.random() < 0.03 and len(given) > 3:
            given = self._letter_typo(given)
        if rng.random() < 0.06:
            family, given = given, family
        return family, given

    def _spelling(self, spellings: list[str]) -> str:
        if len(spellings) <= 1 or self._rng.random() < 0.85:
            return spellings[0]
        return self._rng.choice(spellings[1:])

    @staticmethod
    def _pinyin(toned: str, keep_tones: bool) -> str:
        if keep_tones:
            return toned
        plain = {"ā": "a", "á": "a", "ǎ": "a", "à": "a", "ē": "e", "é": "e", "ě": "e",
                 "è": "e", "ī": "i", "í": "i", "ǐ": "i", "ì": "i", "ō": "o", "ó": "o",
                 "ǒ": "o", "ò": "o", "ū": "u", "ú": "u", "ǔ": "u", "ù": "u", "ǚ": "v",
                 "ǜ": "v", "ü": "v"}  # fmt: skip
        return "".join(plain.get(char, char) for char in toned)

    def _letter_typo(self, text: str) -> str:
        position = self._rng.randrange(1, len(text) - 1)
        if text[position] == " " or text[position] == "-":
            return text
        return text[:position] + self._rng.choice("aeiounghz") + text[position + 1 :]

    def _written_birth(self, birth: date) -> str:
        rng = self._rng
        roll = rng.random()
        if roll < 0.015:
            return ""
        written = birth.isoformat()
        if roll < 0.045 and birth.day <= 12 and birth.day != birth.month:
            return f"{birth.year:04d}-{birth.day:02d}-{birth.month:02d}"
        if roll < 0.065:
            for _ in range(10):
                position = rng.choice([2, 3, 6, 8, 9])
                candidate = written[:position] + str(rng.randrange(10)) + written[position + 1 :]
                try:
                    if candidate != written and date.fromisoformat(candidate) <= self._today:
                        return candidate
                except ValueError:
                    continue
        return written

    def _written_phone(self, person: _Person) -> str:
        rng = self._rng
        roll = rng.random()
        if roll < 0.08:
            return ""
        phone = person.household_phone if rng.random() < 0.2 else person.phone
        if roll < 0.1:
            position = rng.randrange(3, 11)
            phone = phone[:position] + str(rng.randrange(10)) + phone[position + 1 :]
        if rng.random() < 0.1:
            phone = f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}"
        return phone

    def _written_address(self, address: str) -> str:
        rng = self._rng
        roll = rng.random()
        if roll < 0.12:
            return ""
        if roll < 0.17:
            return address.split("号")[0] + "号"  # the building without the flat
        if roll < 0.22:
            full_width = str.maketrans("0123456789", "０１２３４５６７８９")
            return address.translate(full_width)
        return address


def true_pairs(registrations: list[Registration]) -> set[tuple[int, int]]:
    """Index pairs (i < j) of registrations of the same person."""
    by_person: dict[int, list[int]] = {}
    for position, registration in enumerate(registrations):
        by_person.setdefault(registration.person_id, []).append(position)
    return {
        (members[i], members[j])
        for members in by_person.values()
        for i in range(len(members))
        for j in range(i + 1, len(members))
    }
